package dht

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
)

// The value store holds the records this node serves. In memory by default;
// with WithStoreFile it is loaded from a file at New and written back at
// Close, so a server that restarts keeps serving the records it held.
//
// File format: "p2pos-store-1\n", then per entry: uvarint key length, key,
// uvarint value length, value. Values are kad-dht's stored records, which are
// validated again when served.

const (
	storeMagic       = "p2pos-store-1\n"
	maxStoreEntries  = 1 << 20
	maxStoreKeyLen   = 512
	maxStoreValueLen = 8 << 10
)

type valueStore struct {
	ds.Batching
	path string
}

func openValueStore(path string) (*valueStore, error) {
	s := &valueStore{Batching: dssync.MutexWrap(ds.NewMapDatastore()), path: path}
	if path == "" {
		return s, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dht: store file: %w", err)
	}
	defer f.Close()
	if err := s.load(bufio.NewReader(f)); err != nil {
		return nil, fmt.Errorf("dht: store file %s: %w", path, err)
	}
	return s, nil
}

func (s *valueStore) load(r *bufio.Reader) error {
	magic := make([]byte, len(storeMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != storeMagic {
		return errors.New("not a store file")
	}
	ctx := context.Background()
	for i := 0; ; i++ {
		if i >= maxStoreEntries {
			return errors.New("too many entries")
		}
		k, err := readChunk(r, maxStoreKeyLen)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		v, err := readChunk(r, maxStoreValueLen)
		if err != nil {
			return fmt.Errorf("truncated entry: %w", err)
		}
		if err := s.Put(ctx, ds.NewKey(string(k)), v); err != nil {
			return err
		}
	}
}

func readChunk(r *bufio.Reader, limit uint64) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, fmt.Errorf("entry of %d bytes exceeds %d", n, limit)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// save writes the store to its file (atomically, mode 0600).
func (s *valueStore) save() error {
	if s.path == "" {
		return nil
	}
	res, err := s.Query(context.Background(), dsq.Query{})
	if err != nil {
		return err
	}
	defer res.Close()
	tmp := s.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("dht: store file: %w", err)
	}
	w := bufio.NewWriter(f)
	w.WriteString(storeMagic)
	var buf [binary.MaxVarintLen64]byte
	for e := range res.Next() {
		if e.Error != nil {
			f.Close()
			os.Remove(tmp)
			return e.Error
		}
		if len(e.Key) > maxStoreKeyLen || len(e.Value) > maxStoreValueLen {
			continue
		}
		w.Write(buf[:binary.PutUvarint(buf[:], uint64(len(e.Key)))])
		w.WriteString(e.Key)
		w.Write(buf[:binary.PutUvarint(buf[:], uint64(len(e.Value)))])
		w.Write(e.Value)
	}
	err = w.Flush()
	if err == nil {
		err = f.Sync()
	}
	err = errors.Join(err, f.Close())
	if err == nil {
		err = os.Rename(tmp, s.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("dht: store file: %w", err)
	}
	return nil
}
