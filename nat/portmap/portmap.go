package portmap

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	logging "github.com/ipfs/go-log/v2"
)

// Protocol names a port mapping protocol.
type Protocol string

// The protocols a Client speaks.
const (
	NATPMP Protocol = "nat-pmp"
	PCP    Protocol = "pcp"
	UPnP   Protocol = "upnp"
)

// Mapping is a port mapping the gateway granted: packets to External reach
// InternalPort on this host, over Transport, until Obtained+Lifetime.
// Mappings are values; Delete and renewals need the one Map returned
// (it carries the PCP nonce and the UPnP control URL).
type Mapping struct {
	Protocol Protocol
	// Transport is "udp" or "tcp".
	Transport    string
	InternalPort uint16
	// External is the gateway's external address and the mapped port.
	External netip.AddrPort
	// Lifetime is what the gateway granted. Zero means until deleted (a
	// UPnP gateway that supports only permanent leases).
	Lifetime time.Duration
	// Obtained is when the gateway answered, by the Client's clock.
	Obtained time.Time

	gateway    netip.Addr
	local      netip.Addr // the address the mapping points at
	nonce      [12]byte   // PCP
	controlURL string     // UPnP
	service    string     // UPnP service type
}

// Expires returns when the mapping ends, or the zero time if it does not.
func (m Mapping) Expires() time.Time {
	if m.Lifetime == 0 {
		return time.Time{}
	}
	return m.Obtained.Add(m.Lifetime)
}

// String describes the mapping in one line.
func (m Mapping) String() string {
	return fmt.Sprintf("%s %s %v:%d -> %v for %v", m.Protocol, m.Transport, m.local, m.InternalPort, m.External, m.Lifetime)
}

// Availability is what Probe found.
type Availability struct {
	// Gateway is the address that was asked.
	Gateway netip.Addr
	PCP     Service
	NATPMP  Service
	UPnP    Service
}

// Any reports whether any protocol answered.
func (a Availability) Any() bool { return a.PCP.OK || a.NATPMP.OK || a.UPnP.OK }

// Service is what one protocol answered to Probe.
type Service struct {
	// OK is true when the gateway answered the protocol with success.
	OK bool
	// External is the external address the gateway reported, if the
	// protocol reports one: PCP's ANNOUNCE carries none, so for PCP it is
	// the zero Addr.
	External netip.Addr
	// Err says why OK is false.
	Err error
}

// Client obtains port mappings from one gateway. Its methods are safe for
// concurrent use. A Client owns no goroutine and needs no closing; the
// Keepers it starts are closed on their own.
type Client struct {
	s   settings
	log *logging.ZapEventLogger

	mu  sync.Mutex
	igd *igd // guarded by mu: the UPnP service found last, nil if none
}

// NewClient returns a Client configured by opts.
func NewClient(opts ...Option) (*Client, error) {
	s := defaultSettings()
	for _, o := range opts {
		if err := o(&s); err != nil {
			return nil, err
		}
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	log := s.log
	if log == nil {
		log = logging.Logger("rendezvous/portmap")
	}
	return &Client{s: s, log: log}, nil
}

// gatewayAddr returns the configured gateway, or the default route's.
func (c *Client) gatewayAddr() (netip.Addr, error) {
	if c.s.gateway.IsValid() {
		return c.s.gateway, nil
	}
	return defaultGateway(c.s.routeFile)
}

// Probe asks the gateway, over all three protocols at once, which ones it
// answers and what external address each reports. It returns an error only
// when there is no gateway or ctx ends; a protocol's failure is in its
// Service.Err. Probe creates no mapping. It takes at most the Client's
// timeout.
func (c *Client) Probe(ctx context.Context) (Availability, error) {
	gw, err := c.gatewayAddr()
	if err != nil {
		return Availability{}, err
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, c.s.timeout)
	defer cancel()
	a := Availability{Gateway: gw}
	var wg sync.WaitGroup
	wg.Go(func() {
		a.PCP.Err = c.announcePCP(ctx, gw)
	})
	wg.Go(func() {
		a.NATPMP.External, a.NATPMP.Err = c.externalPMP(ctx, gw)
	})
	wg.Go(func() {
		a.UPnP.External, a.UPnP.Err = c.externalUPnP(ctx, gw)
	})
	wg.Wait()
	for _, s := range []*Service{&a.PCP, &a.NATPMP, &a.UPnP} {
		s.OK = s.Err == nil
	}
	if err := parent.Err(); err != nil {
		return a, err
	}
	c.log.Debugw("probe", "gateway", gw, "pcp", a.PCP.OK, "natpmp", a.NATPMP.OK, "upnp", a.UPnP.OK)
	return a, nil
}

// request is what Map asks for.
type request struct {
	transport    string
	internalPort uint16
	lifetime     time.Duration
}

func checkRequest(transport string, internalPort uint16, lifetime time.Duration) (request, error) {
	switch {
	case transport != "udp" && transport != "tcp":
		return request{}, fmt.Errorf("portmap: transport %q, want \"udp\" or \"tcp\"", transport)
	case internalPort == 0:
		return request{}, errors.New("portmap: internal port 0")
	case lifetime < time.Second:
		return request{}, fmt.Errorf("portmap: lifetime %v, want at least 1s", lifetime)
	case lifetime > time.Duration(1<<32-1)*time.Second:
		return request{}, fmt.Errorf("portmap: lifetime %v too long", lifetime)
	}
	return request{transport, internalPort, lifetime.Round(time.Second)}, nil
}

// Map asks the gateway to map an external port to internalPort on this
// host for lifetime (at least one second, whole seconds) over transport
// ("udp" or "tcp"). It tries the Client's protocols in order (by default
// PCP, NAT-PMP, UPnP), each bounded by the Client's timeout, and returns
// the first mapping granted. The gateway picks the external port; it is
// asked for internalPort. The granted lifetime may be shorter than asked.
//
// Errors: ErrNoGateway; otherwise an error joining every protocol's
// failure, so that errors.Is(err, ErrNotSupported) holds when no protocol
// was spoken and errors.As finds a *ResultError when a gateway refused.
// PCP and NAT-PMP share one server port: when PCP got no answer at all,
// NAT-PMP is not tried.
func (c *Client) Map(ctx context.Context, transport string, internalPort uint16, lifetime time.Duration) (Mapping, error) {
	req, err := checkRequest(transport, internalPort, lifetime)
	if err != nil {
		return Mapping{}, err
	}
	return c.mapPort(ctx, req, Mapping{})
}

// mapPort obtains a mapping, renewing prev if it is valid: its protocol is
// tried first, with its external port and nonce.
func (c *Client) mapPort(ctx context.Context, req request, prev Mapping) (Mapping, error) {
	gw, err := c.gatewayAddr()
	if err != nil {
		return Mapping{}, err
	}
	if prev.gateway != gw {
		prev = Mapping{}
	}
	order := c.s.protocols
	if prev.Protocol != "" {
		if i := slices.Index(order, prev.Protocol); i > 0 {
			order = slices.Concat([]Protocol{prev.Protocol}, order[:i], order[i+1:])
		}
	}
	var errs []error
	pcpSilent := false
	for _, p := range order {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if p == NATPMP && pcpSilent {
			continue
		}
		old := prev
		if old.Protocol != p {
			old = Mapping{}
		}
		pctx, cancel := context.WithTimeout(ctx, c.s.timeout)
		var m Mapping
		switch p {
		case PCP:
			m, err = c.mapPCP(pctx, gw, req, old)
			pcpSilent = errors.Is(err, errNoAnswer)
		case NATPMP:
			m, err = c.mapPMP(pctx, gw, req, old)
		case UPnP:
			m, err = c.mapUPnP(pctx, gw, req, old)
		}
		cancel()
		if err == nil {
			m.Protocol, m.Transport, m.InternalPort, m.gateway = p, req.transport, req.internalPort, gw
			m.Obtained = c.s.now()
			c.log.Debugw("mapped", "mapping", m.String())
			return m, nil
		}
		c.log.Debugw("map failed", "protocol", p, "error", err)
		errs = append(errs, err)
	}
	return Mapping{}, fmt.Errorf("portmap: map %s port %d via %v: %w", req.transport, req.internalPort, gw, errors.Join(errs...))
}

// Delete asks the gateway to remove m, with the protocol that made it.
// Deleting a mapping the gateway no longer has is not an error.
func (c *Client) Delete(ctx context.Context, m Mapping) error {
	if _, err := checkRequest(m.Transport, m.InternalPort, time.Second); err != nil {
		return err
	}
	if !m.gateway.IsValid() {
		gw, err := c.gatewayAddr()
		if err != nil {
			return err
		}
		m.gateway = gw
	}
	ctx, cancel := context.WithTimeout(ctx, c.s.timeout)
	defer cancel()
	var err error
	switch m.Protocol {
	case PCP:
		err = c.deletePCP(ctx, m)
	case NATPMP:
		err = c.deletePMP(ctx, m)
	case UPnP:
		err = c.deleteUPnP(ctx, m)
	default:
		return fmt.Errorf("portmap: delete: unknown protocol %q", m.Protocol)
	}
	if err != nil {
		return fmt.Errorf("portmap: delete %v: %w", m, err)
	}
	c.log.Debugw("deleted", "mapping", m.String())
	return nil
}
