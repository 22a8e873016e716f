package rendezvous

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// ErrKeyFilePermissions is returned when a key file can be read by group or
// others.
var ErrKeyFilePermissions = errors.New("rendezvous: key file is readable by group or others (want mode 0600)")

// ErrKeyType is returned when a key file holds a key that is not Ed25519.
var ErrKeyType = errors.New("rendezvous: key is not Ed25519")

// LoadOrCreateKey reads the Ed25519 identity key at path, or creates one there
// (mode 0600) if the file does not exist. A file readable by group or others
// is refused with ErrKeyFilePermissions.
func LoadOrCreateKey(path string) (crypto.PrivKey, error) {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return createKey(path)
	case err != nil:
		return nil, fmt.Errorf("rendezvous: key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %#o", ErrKeyFilePermissions, path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("rendezvous: key file: %w", err)
	}
	k, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("rendezvous: key file %s: %w", path, err)
	}
	if k.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("%w: %s holds a %s key", ErrKeyType, path, k.Type())
	}
	return k, nil
}

func createKey(path string) (crypto.PrivKey, error) {
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, err
	}
	b, err := crypto.MarshalPrivateKey(k)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("rendezvous: create key file: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("rendezvous: write key file: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("rendezvous: write key file: %w", err)
	}
	return k, nil
}
