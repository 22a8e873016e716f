package plugin

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/p2pos/rendezvous"
)

// Config says which plugins may use a node's socket: each with its token,
// and the services it may register and open. It is read from a JSON file
// (LoadConfig) such as
//
//	{"plugins": [
//	  {"name": "chat", "token": "…at least 16 characters…",
//	   "register": ["chat/1"], "open": ["chat/1"]}
//	]}
//
// A service is granted by its name and version ("chat/1"), or by its name
// with every version ("chat/*").
type Config struct {
	Plugins []Grant `json:"plugins"`
}

// Grant is one plugin's entry in a Config.
type Grant struct {
	Name     string   `json:"name"`
	Token    string   `json:"token"`
	Register []string `json:"register"`
	Open     []string `json:"open"`
}

// MinTokenLen is the shortest token a Config accepts.
const MinTokenLen = 16

// LoadConfig reads and checks a Config from a JSON file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("plugin: config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("plugin: config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses and checks a Config in JSON. Unknown fields are
// errors: a misspelt grant should not pass unnoticed.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the configuration")
	}
	if err := c.Check(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Check tells whether c is usable: names and tokens unique, tokens long
// enough, services well formed.
func (c *Config) Check() error {
	names, tokens := map[string]bool{}, map[string]bool{}
	for i, g := range c.Plugins {
		switch {
		case g.Name == "":
			return fmt.Errorf("plugin %d has no name", i)
		case names[g.Name]:
			return fmt.Errorf("plugin %q twice", g.Name)
		case len(g.Token) < MinTokenLen:
			return fmt.Errorf("plugin %q: token shorter than %d characters", g.Name, MinTokenLen)
		case tokens[g.Token]:
			return fmt.Errorf("plugin %q: token of another plugin", g.Name)
		}
		names[g.Name], tokens[g.Token] = true, true
		for _, s := range append(append([]string{}, g.Register...), g.Open...) {
			if err := checkGrant(s); err != nil {
				return fmt.Errorf("plugin %q: %w", g.Name, err)
			}
		}
	}
	return nil
}

func checkGrant(s string) error {
	if name, ok := strings.CutSuffix(s, "/*"); ok {
		return rendezvous.CheckService(name + "/1")
	}
	return rendezvous.CheckService(s)
}

// grants tells whether list grants service.
func grants(list []string, service string) bool {
	name, _, _ := strings.Cut(service, "/")
	for _, g := range list {
		if g == service || g == name+"/*" {
			return true
		}
	}
	return false
}

// errNoSuchToken: no plugin has the token.
var errNoSuchToken = errors.New("plugin: unknown token")

// find returns the grant of the plugin with token, comparing every
// token in constant time.
func (c *Config) find(token []byte) (*Grant, error) {
	var found *Grant
	for i := range c.Plugins {
		if subtle.ConstantTimeCompare([]byte(c.Plugins[i].Token), token) == 1 {
			found = &c.Plugins[i]
		}
	}
	if found == nil {
		return nil, errNoSuchToken
	}
	return found, nil
}
