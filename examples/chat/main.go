// Command chat is a terminal chat over rendezvous: everyone who joins a
// room finds the others by the room's topic, connects to each (directly
// when the routers allow it, else through a relay) and sends them what
// they type. It runs a node of its own, or, with --plugin, as a plugin of
// a running node (rendezvous node --plugins ...).
//
//	go run ./examples/chat --room friends --bootstrap /ip4/…/p2p/12D3Koo…
//	go run ./examples/chat --room friends --plugin ~/.rendezvous/plugins.sock --token …
//
// Lines typed are sent to every member. Each member's line says whether
// its connection is direct or relayed. With --json, every event is a JSON
// line on stdout instead (for scripts and tests).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// service is the chat's service: peers open streams to it.
const service = "chat/1"

// findEvery is how often the room's members are looked for.
const findEvery = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	room := fs.String("room", "", "the room to join (required)")
	nick := fs.String("name", "", "your name in the room (default: your user name)")
	boot := fs.String("bootstrap", os.Getenv("RENDEZVOUS_BOOTSTRAP"), "join the network through the peers at `ADDRS` (comma-separated multiaddrs; default $RENDEZVOUS_BOOTSTRAP)")
	ranges := fs.String("public-ranges", "", "address ranges (`CIDRS`) that count as public besides the internet's, for private networks")
	listen := fs.String("listen", "", "listen on `ADDRS` (comma-separated multiaddrs; default: all interfaces, QUIC and TCP)")
	socket := fs.String("plugin", "", "run as a plugin of the node serving the socket at `PATH`, instead of a node of its own")
	token := fs.String("token", os.Getenv("RENDEZVOUS_PLUGIN_TOKEN"), "the plugin's `TOKEN` (default $RENDEZVOUS_PLUGIN_TOKEN)")
	jsonOut := fs.Bool("json", false, "print events as JSON lines")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *room == "" {
		return errors.New("--room is required")
	}
	if *nick == "" {
		*nick = os.Getenv("USER")
		if *nick == "" {
			*nick = "someone"
		}
	}
	var b backend
	var err error
	if *socket != "" {
		b, err = newPluginBackend(ctx, *socket, *token)
	} else {
		b, err = newNodeBackend(ctx, splitList(*boot), splitList(*ranges), splitList(*listen))
	}
	if err != nil {
		return err
	}
	defer b.Close()
	c := &chat{b: b, room: *room, nick: *nick, out: newPrinter(stdout, *jsonOut), members: map[string]*member{}}
	return c.run(ctx, stdin)
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// backend is what the chat needs: a node of its own, or a plugin session.
type backend interface {
	Self() string
	// Serve hands over the streams peers open to the chat's service.
	Serve(ctx context.Context, handle func(conn net.Conn, peer string, relayed bool)) error
	Open(ctx context.Context, peer string) (conn net.Conn, relayed bool, err error)
	Advertise(ctx context.Context, topic string) error
	Find(ctx context.Context, topic string) ([]string, error)
	// Paths reports connections that became direct, if the backend can
	// tell.
	Paths() <-chan string
	Close() error
}

// message is one line of the chat's stream: JSON.
type message struct {
	From string `json:"from"`
	Text string `json:"text"`
}

// member is another peer in the room.
type member struct {
	peer    string
	nick    string
	relayed bool
	enc     *json.Encoder
	conn    net.Conn
}

type chat struct {
	b    backend
	room string
	nick string
	out  *printer

	mu      sync.Mutex
	members map[string]*member // by peer ID
}

func (c *chat) topic() string { return "chat:" + c.room }

func (c *chat) run(ctx context.Context, stdin io.Reader) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := c.b.Serve(ctx, func(conn net.Conn, peer string, relayed bool) { c.joined(ctx, conn, peer, relayed) }); err != nil {
		return err
	}
	if err := c.b.Advertise(ctx, c.topic()); err != nil {
		return fmt.Errorf("advertise the room: %w", err)
	}
	c.out.event("ready", map[string]any{"peer": c.b.Self(), "room": c.room},
		fmt.Sprintf("in room %q as %s (%s); type to talk, Ctrl-D to leave", c.room, c.nick, short(c.b.Self())))
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { c.look(ctx) })
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case p, ok := <-c.b.Paths():
				if !ok {
					return
				}
				c.mu.Lock()
				m := c.members[p]
				if m != nil {
					m.relayed = false
				}
				c.mu.Unlock()
				if m != nil {
					c.out.event("direct", map[string]any{"peer": p, "name": m.nick}, fmt.Sprintf("%s is now connected directly", m.nick))
				}
			}
		}
	})
	lines := make(chan string)
	go func() { // ends with stdin; it cannot be interrupted
		defer close(lines)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			c.leave()
			return nil
		case l, ok := <-lines:
			if !ok {
				c.leave()
				return nil
			}
			if strings.TrimSpace(l) != "" {
				c.send(l)
			}
		}
	}
}

// look finds the room's members every findEvery and connects to those it
// does not know. Of two members, the one with the smaller peer ID opens
// the stream, so that each pair has one.
func (c *chat) look(ctx context.Context) {
	t := time.NewTicker(findEvery)
	defer t.Stop()
	for {
		fctx, cancel := context.WithTimeout(ctx, findEvery*4)
		peers, err := c.b.Find(fctx, c.topic())
		cancel()
		if err != nil && ctx.Err() == nil {
			c.out.event("error", map[string]any{"error": err.Error()}, "looking for members: "+err.Error())
		}
		for _, p := range peers {
			c.mu.Lock()
			known := c.members[p] != nil
			c.mu.Unlock()
			if p == c.b.Self() || known || c.b.Self() > p {
				continue
			}
			octx, cancel := context.WithTimeout(ctx, 30*time.Second)
			conn, relayed, err := c.b.Open(octx, p)
			cancel()
			if err != nil {
				c.out.event("error", map[string]any{"peer": p, "error": err.Error()}, fmt.Sprintf("cannot reach %s: %v", short(p), err))
				continue
			}
			go c.joined(ctx, conn, p, relayed)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// joined runs a member's stream: it says hello, then prints what comes.
func (c *chat) joined(ctx context.Context, conn net.Conn, peer string, relayed bool) {
	defer conn.Close()
	m := &member{peer: peer, relayed: relayed, enc: json.NewEncoder(conn), conn: conn, nick: short(peer)}
	if err := m.enc.Encode(message{From: c.nick}); err != nil {
		return
	}
	dec := json.NewDecoder(conn)
	var hello message
	if err := dec.Decode(&hello); err != nil {
		return
	}
	if hello.From != "" {
		m.nick = hello.From
	}
	c.mu.Lock()
	if old := c.members[peer]; old != nil {
		c.mu.Unlock()
		return // a second stream from the same member
	}
	c.members[peer] = m
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.members, peer)
		c.mu.Unlock()
		c.out.event("left", map[string]any{"peer": peer, "name": m.nick}, m.nick+" left")
	}()
	c.out.event("joined", map[string]any{"peer": peer, "name": m.nick, "path": path(relayed)},
		fmt.Sprintf("%s joined (%s, %s)", m.nick, short(peer), path(relayed)))
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	for {
		var msg message
		if err := dec.Decode(&msg); err != nil {
			return
		}
		c.out.event("message", map[string]any{"peer": peer, "name": m.nick, "text": msg.Text}, fmt.Sprintf("<%s> %s", m.nick, msg.Text))
	}
}

func (c *chat) send(text string) {
	c.mu.Lock()
	ms := make([]*member, 0, len(c.members))
	for _, m := range c.members {
		ms = append(ms, m)
	}
	c.mu.Unlock()
	sort.Slice(ms, func(i, j int) bool { return ms[i].nick < ms[j].nick })
	for _, m := range ms {
		m.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := m.enc.Encode(message{From: c.nick, Text: text}); err != nil {
			c.out.event("error", map[string]any{"peer": m.peer, "error": err.Error()}, fmt.Sprintf("to %s: %v", m.nick, err))
		}
	}
	c.out.event("sent", map[string]any{"text": text, "to": len(ms)}, "")
}

func (c *chat) leave() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		m.conn.Close()
	}
}

func path(relayed bool) string {
	if relayed {
		return "relayed"
	}
	return "direct"
}

func short(id string) string {
	if len(id) > 12 {
		return id[len(id)-8:]
	}
	return id
}

// printer writes events: text for people, or JSON lines.
type printer struct {
	mu   sync.Mutex
	w    io.Writer
	json bool
}

func newPrinter(w io.Writer, json bool) *printer { return &printer{w: w, json: json} }

func (p *printer) event(kind string, fields map[string]any, text string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.json {
		fields["event"] = kind
		b, _ := json.Marshal(fields)
		fmt.Fprintf(p.w, "%s\n", b)
		return
	}
	if text != "" {
		fmt.Fprintf(p.w, "%s %s\n", time.Now().Format("15:04:05"), text)
	}
}
