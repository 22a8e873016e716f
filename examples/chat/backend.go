package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/plugin"
	"github.com/p2pos/rendezvous/scope"
)

// maxMembers bounds the members a room lookup returns.
const maxMembers = 64

// nodeBackend runs a node of its own.
type nodeBackend struct {
	n     *rendezvous.Node
	paths chan string
	unsub func()
	wg    sync.WaitGroup
}

func newNodeBackend(ctx context.Context, boot, ranges, listen []string) (*nodeBackend, error) {
	if len(boot) == 0 {
		return nil, errors.New("no bootstrap peers: give --bootstrap or set $RENDEZVOUS_BOOTSTRAP")
	}
	peers, err := rendezvous.ParseBootstrap(boot...)
	if err != nil {
		return nil, err
	}
	opts := []rendezvous.Option{rendezvous.WithBootstrap(peers...)}
	if len(ranges) > 0 {
		prefixes, err := scope.Parse(ranges...)
		if err != nil {
			return nil, err
		}
		opts = append(opts, rendezvous.WithPublicRanges(prefixes...))
	}
	if len(listen) > 0 {
		opts = append(opts, rendezvous.WithListenAddrStrings(listen...))
	}
	n, err := rendezvous.New(ctx, opts...)
	if err != nil {
		return nil, err
	}
	// Members look the node up by its record: wait until it is out.
	select {
	case <-n.Ready():
	case <-ctx.Done():
		n.Close()
		return nil, ctx.Err()
	}
	b := &nodeBackend{n: n, paths: make(chan string, 16)}
	events, unsub := n.Subscribe()
	b.unsub = unsub
	b.wg.Go(func() {
		for ev := range events {
			if ev.Type == rendezvous.EventPath && ev.PathChange != nil {
				select {
				case b.paths <- ev.PathChange.Peer.String():
				default:
				}
			}
		}
	})
	return b, nil
}

func (b *nodeBackend) Self() string { return b.n.ID().String() }

func (b *nodeBackend) Serve(_ context.Context, handle func(net.Conn, string, bool)) error {
	return b.n.Handle(service, func(s *rendezvous.Stream) { handle(s, s.Peer().String(), s.Relayed()) })
}

func (b *nodeBackend) Open(ctx context.Context, p string) (net.Conn, bool, error) {
	id, err := peer.Decode(p)
	if err != nil {
		return nil, false, err
	}
	s, err := b.n.Open(ctx, id, service)
	if err != nil {
		return nil, false, err
	}
	return s, s.Relayed(), nil
}

func (b *nodeBackend) Advertise(ctx context.Context, topic string) error {
	return b.n.Advertise(ctx, topic)
}

func (b *nodeBackend) Find(ctx context.Context, topic string) ([]string, error) {
	recs, err := b.n.FindPeers(ctx, topic, maxMembers)
	out := make([]string, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.PeerID.String())
	}
	return out, err
}

func (b *nodeBackend) Paths() <-chan string { return b.paths }

func (b *nodeBackend) Close() error {
	b.unsub() // closes events: the watcher ends
	b.wg.Wait()
	return b.n.Close()
}

// pluginBackend is a plugin of a running node.
type pluginBackend struct {
	c      *plugin.Client
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newPluginBackend(ctx context.Context, socket, token string) (*pluginBackend, error) {
	if token == "" {
		return nil, errors.New("--plugin needs --token (or $RENDEZVOUS_PLUGIN_TOKEN)")
	}
	c, err := plugin.Dial(ctx, socket, token)
	if err != nil {
		return nil, fmt.Errorf("plugin socket %s: %w", socket, err)
	}
	return &pluginBackend{c: c, cancel: func() {}}, nil
}

func (b *pluginBackend) Self() string { return b.c.PeerID() }

func (b *pluginBackend) Serve(ctx context.Context, handle func(net.Conn, string, bool)) error {
	l, err := b.c.Register(ctx, service)
	if err != nil {
		return err
	}
	ctx, b.cancel = context.WithCancel(ctx)
	b.wg.Go(func() {
		defer l.Close()
		for {
			s, err := l.AcceptStream(ctx)
			if err != nil {
				return
			}
			b.wg.Go(func() { handle(s, s.Info().Peer, s.Info().Relayed) })
		}
	})
	return nil
}

func (b *pluginBackend) Open(ctx context.Context, p string) (net.Conn, bool, error) {
	s, err := b.c.Open(ctx, p, service)
	if err != nil {
		return nil, false, err
	}
	return s, s.Info().Relayed, nil
}

func (b *pluginBackend) Advertise(ctx context.Context, topic string) error {
	return b.c.Advertise(ctx, topic)
}

func (b *pluginBackend) Find(ctx context.Context, topic string) ([]string, error) {
	recs, err := b.c.FindPeers(ctx, topic, maxMembers)
	out := make([]string, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.PeerID)
	}
	return out, err
}

// Paths is nil: a plugin is not told of path changes.
func (b *pluginBackend) Paths() <-chan string { return nil }

func (b *pluginBackend) Close() error {
	b.cancel()
	err := b.c.Close() // ends the streams: the handlers return
	b.wg.Wait()
	return err
}
