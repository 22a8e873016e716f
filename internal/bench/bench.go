// Package bench measures the rendezvous DHT on a loopback network and prints
// the figures as Markdown tables: record sizes, lookups of NATed peers'
// records (success, requests, bytes, latency) and the cost of a publish.
package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pos/rendezvous/dht"
	"github.com/p2pos/rendezvous/internal/testnet"
)

// Config sizes a run.
type Config struct {
	Public    int // public nodes (DHT servers, relays)
	Private   int // private nodes (DHT clients behind relays)
	Lookups   int // lookups of private peers' records
	Publishes int // publishes measured
	Transport testnet.Transport
	Seed      uint64
}

// DefaultConfig is the run the README quotes: 200 nodes.
func DefaultConfig() Config {
	return Config{Public: 50, Private: 150, Lookups: 200, Publishes: 20, Transport: testnet.QUIC, Seed: 1}
}

// Run builds the network, measures, and writes the tables to w.
func Run(ctx context.Context, cfg Config, w io.Writer) error {
	if err := RecordSizes(w); err != nil {
		return err
	}
	start := time.Now()
	net, err := testnet.New(ctx, testnet.Config{Public: cfg.Public, Private: cfg.Private, Transport: cfg.Transport})
	if err != nil {
		return err
	}
	defer net.Close()
	fmt.Fprintf(w, "\nNetwork: %d public + %d private nodes on loopback (%s), up in %.1f s.\n",
		cfg.Public, cfg.Private, cfg.Transport, time.Since(start).Seconds())
	rng := mrand.New(mrand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	if err := Lookups(ctx, net, cfg.Lookups, rng, w); err != nil {
		return err
	}
	return Publishes(ctx, net, cfg.Publishes, rng, w)
}

// RecordSizes prints the size of sealed records.
func RecordSizes(w io.Writer) error {
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return err
	}
	relayKey, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return err
	}
	relayID, _ := peer.IDFromPrivateKey(relayKey)
	direct := func(i int) ma.Multiaddr {
		if i%2 == 0 {
			return ma.StringCast(fmt.Sprintf("/ip4/198.51.100.%d/udp/4001/quic-v1", i+1))
		}
		return ma.StringCast(fmt.Sprintf("/ip4/198.51.100.%d/tcp/4001", i+1))
	}
	relays := []ma.Multiaddr{
		ma.StringCast(fmt.Sprintf("/ip4/203.0.113.7/udp/4001/quic-v1/p2p/%s/p2p-circuit", relayID)),
		ma.StringCast(fmt.Sprintf("/ip4/203.0.113.8/udp/4001/quic-v1/p2p/%s/p2p-circuit", relayID)),
	}
	fmt.Fprintf(w, "### Signed record size (Ed25519 envelope)\n\n| direct addrs | relay addrs | bytes |\n|---:|---:|---:|\n")
	now := time.Now()
	for _, c := range []struct{ d, r int }{{1, 0}, {4, 0}, {1, 2}, {4, 2}, {8, 2}} {
		r := &dht.Record{Seq: uint64(now.UnixMilli()), Issued: now, Expires: now.Add(dht.DefaultRecordTTL),
			NAT: dht.NATInfo{Reachability: dht.ReachabilityPrivate}}
		for i := range c.d {
			r.Addrs = append(r.Addrs, direct(i))
		}
		r.RelayAddrs = relays[:c.r]
		b, err := r.Seal(key)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "| %d | %d | %d |\n", c.d, c.r, len(b))
	}
	return nil
}

// Lookups looks up private peers' records from other private peers, cache
// bypassed, and prints success, requests, bytes and latency.
func Lookups(ctx context.Context, net *testnet.Network, count int, rng *mrand.Rand, w io.Writer) error {
	priv := net.Private
	if len(priv) < 2 {
		return fmt.Errorf("bench: need 2 private nodes")
	}
	var ok int
	var rpcs, bytes []float64
	var lat []time.Duration
	var notFound, other int
	var lastErr error
	for range count {
		a := priv[rng.IntN(len(priv))]
		b := priv[rng.IntN(len(priv))]
		for b == a {
			b = priv[rng.IntN(len(priv))]
		}
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		res, err := a.DHT().Lookup(lctx, b.ID(), dht.NoCache())
		cancel()
		rpcs = append(rpcs, float64(res.Stats.RPCs))
		bytes = append(bytes, float64(res.Stats.Bytes()))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errorsIsNotFound(err) {
				notFound++
			} else {
				other++
				lastErr = err
			}
			continue
		}
		if res.Record.PeerID != b.ID() || len(res.Record.RelayAddrs) == 0 {
			other++
			lastErr = fmt.Errorf("record of %s without relay addresses: %v", b.ID(), res.Record)
			continue
		}
		ok++
		lat = append(lat, res.Duration)
	}
	slices.Sort(lat)
	fmt.Fprintf(w, "\n### Lookup of a NATed peer's record (from another NATed peer, cache bypassed)\n\n")
	fmt.Fprintf(w, "| lookups | success | not found | other errors | RPCs avg | RPCs max | bytes avg (sent+recv) | bytes max | latency p50 | latency p95 |\n")
	fmt.Fprintf(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	fmt.Fprintf(w, "| %d | %.1f%% | %d | %d | %.1f | %.0f | %.0f | %.0f | %s | %s |\n",
		count, 100*float64(ok)/float64(count), notFound, other, mean(rpcs), maxf(rpcs), mean(bytes), maxf(bytes),
		pct(lat, 50), pct(lat, 95))
	if lastErr != nil {
		fmt.Fprintf(w, "\nLast error: %v\n", lastErr)
	}
	return nil
}

// Publishes measures a fresh publish (lookup of the closest servers, then
// stores) and a republish straight to the known holders, from private peers.
func Publishes(ctx context.Context, net *testnet.Network, count int, rng *mrand.Rand, w io.Writer) error {
	var fresh, again []dht.PublishResult
	for range count {
		n := net.Private[rng.IntN(len(net.Private))]
		own, err := n.DHT().Lookup(ctx, n.ID())
		if err != nil {
			return fmt.Errorf("bench: own record: %w", err)
		}
		r1 := nextRecord(own.Record)
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		res, err := n.DHT().PublishRecord(pctx, r1, nil)
		if err != nil {
			cancel()
			return fmt.Errorf("bench: publish: %w", err)
		}
		fresh = append(fresh, res)
		res2, err := n.DHT().PublishRecord(pctx, nextRecord(r1), res.Holders)
		cancel()
		if err != nil {
			return fmt.Errorf("bench: republish: %w", err)
		}
		again = append(again, res2)
	}
	fmt.Fprintf(w, "\n### Cost of one publish (from a NATed peer)\n\n")
	fmt.Fprintf(w, "| kind | publishes | holders avg | RPCs avg | bytes avg (sent+recv) | fresh lookups |\n|---|---:|---:|---:|---:|---:|\n")
	for _, row := range []struct {
		name string
		rs   []dht.PublishResult
	}{{"first publish (lookup + store)", fresh}, {"republish to known holders", again}} {
		var h, r, b []float64
		nfresh := 0
		for _, x := range row.rs {
			h = append(h, float64(len(x.Holders)))
			r = append(r, float64(x.Stats.RPCs))
			b = append(b, float64(x.Stats.Bytes()))
			if x.Fresh {
				nfresh++
			}
		}
		fmt.Fprintf(w, "| %s | %d | %.1f | %.1f | %.0f | %d |\n", row.name, len(row.rs), mean(h), mean(r), mean(b), nfresh)
	}
	return nil
}

func nextRecord(r *dht.Record) *dht.Record {
	now := time.Now()
	c := *r
	c.Seq = max(r.Seq+1, uint64(now.UnixMilli()))
	c.Issued = now
	c.Expires = now.Add(dht.DefaultRecordTTL)
	c.PeerID = ""
	return &c
}
