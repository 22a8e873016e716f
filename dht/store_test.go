package dht

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	ds "github.com/ipfs/go-datastore"
)

func TestValueStoreRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "records.store")
	s, err := openValueStore(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := map[string][]byte{"/a": []byte("one"), "/b/c": bytes.Repeat([]byte{7}, 1000), "/empty": {}}
	for k, v := range want {
		if err := s.Put(ctx, ds.NewKey(k), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.save(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("store file mode %#o, want 0600", st.Mode().Perm())
	}
	s2, err := openValueStore(path)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range want {
		got, err := s2.Get(ctx, ds.NewKey(k))
		if err != nil || !bytes.Equal(got, v) {
			t.Errorf("Get(%s) = %q, %v; want %q", k, got, err, v)
		}
	}
}

func TestValueStoreRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"not a store": []byte("hello"),
		"truncated":   append([]byte(storeMagic), 5, 'a'),
		"huge entry":  append([]byte(storeMagic), 0xff, 0xff, 0x03),
		"no value":    append([]byte(storeMagic), 1, 'k'),
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := openValueStore(path); err == nil {
			t.Errorf("%s: opened without error", name)
		}
	}
	if _, err := openValueStore(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("missing file: %v, want an empty store", err)
	}
}

func FuzzValueStoreLoad(f *testing.F) {
	f.Add([]byte(storeMagic))
	f.Add(append([]byte(storeMagic), 2, '/', 'a', 3, 'x', 'y', 'z'))
	f.Add(append([]byte(storeMagic), 0xff, 0xff, 0xff, 0xff, 0x0f))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &valueStore{Batching: ds.NewMapDatastore()}
		if err := s.load(bufio.NewReader(bytes.NewReader(data))); err != nil {
			return
		}
		// What loads must save and load again to the same entries.
		path := filepath.Join(t.TempDir(), "s")
		s.path = path
		if err := s.save(); err != nil {
			t.Fatal(err)
		}
		if _, err := openValueStore(path); err != nil {
			t.Fatalf("saved store does not load: %v", err)
		}
	})
}
