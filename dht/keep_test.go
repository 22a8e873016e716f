package dht

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestKeepWireRoundTrip(t *testing.T) {
	_, recs := fuzzRecords(t)
	req := binary.AppendUvarint(nil, uint64(len(recs[0])))
	req = append(req, recs[0]...)
	got, err := readKeepRequest(bufio.NewReader(bytes.NewReader(req)))
	if err != nil || !bytes.Equal(got, recs[0]) {
		t.Fatalf("request: %v", err)
	}
	var b bytes.Buffer
	if err := writeKeepAnswer(&b, keepInvalid, 7, "bad"); err != nil {
		t.Fatal(err)
	}
	if want := []byte{keepInvalid, 7, 3, 'b', 'a', 'd'}; !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("answer bytes %x, want %x", b.Bytes(), want)
	}
	st, n, reason, err := readKeepAnswer(bufio.NewReader(&b))
	if err != nil || st != keepInvalid || n != 7 || reason != "bad" {
		t.Fatalf("answer: %d %d %q %v", st, n, reason, err)
	}
}

func TestKeepWireRejects(t *testing.T) {
	for name, req := range map[string][]byte{
		"empty":     nil,
		"zero":      {0},
		"oversize":  binary.AppendUvarint(nil, MaxRecordSize+1),
		"truncated": {10, 1, 2, 3},
	} {
		if _, err := readKeepRequest(bufio.NewReader(bytes.NewReader(req))); err == nil {
			t.Errorf("%s request accepted", name)
		} else if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s request: %v", name, err)
		}
	}
	for name, ans := range map[string][]byte{
		"empty":       nil,
		"status":      {9, 0, 0},
		"long reason": append([]byte{keepFailed, 0}, binary.AppendUvarint(nil, maxKeepMessage+1)...),
		"truncated":   {keepFailed, 0, 5, 'a'},
	} {
		if _, _, _, err := readKeepAnswer(bufio.NewReader(bytes.NewReader(ans))); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s answer: %v", name, err)
		}
	}
}

func FuzzKeepRequest(f *testing.F) {
	_, recs := fuzzRecords(f)
	for _, r := range recs {
		f.Add(append(binary.AppendUvarint(nil, uint64(len(r))), r...))
	}
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, b []byte) {
		data, err := readKeepRequest(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			return
		}
		if len(data) == 0 || len(data) > MaxRecordSize {
			t.Fatalf("accepted %d bytes", len(data))
		}
	})
}

func FuzzKeepAnswer(f *testing.F) {
	f.Add([]byte{keepStored, 20, 0})
	f.Add([]byte{keepRefused, 0, 3, 'f', 'o', 'o'})
	f.Fuzz(func(t *testing.T, b []byte) {
		st, _, reason, err := readKeepAnswer(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			return
		}
		if st > keepFailed || len(reason) > maxKeepMessage {
			t.Fatalf("accepted status %d reason of %d bytes", st, len(reason))
		}
	})
}
