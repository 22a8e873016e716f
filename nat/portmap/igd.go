package portmap

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Bounds of UPnP's HTTP answers.
const (
	maxHTTPHeader = 16 << 10
	maxHTTPBody   = 64 << 10
)

// UPnP error codes the Client reacts to.
const (
	upnpNoSuchEntry         = 714 // on delete: already gone
	upnpConflict            = 718 // retried on a random port
	upnpOnlyPermanentLeases = 725 // retried with lease 0
)

// Bounds of AddPortMapping retries on a port conflict.
const (
	upnpConflictRetries  = 3
	upnpDynamicPortsFrom = 1024
	upnpDynamicPortsTo   = 65535
)

// The WAN connection services, most preferred first.
var wanServices = []string{
	"urn:schemas-upnp-org:service:WANIPConnection:2",
	"urn:schemas-upnp-org:service:WANIPConnection:1",
	"urn:schemas-upnp-org:service:WANPPPConnection:1",
}

// igd is a gateway's WAN connection service.
type igd struct {
	gateway    netip.Addr
	service    string // service type
	controlURL string
}

// xmlDevice is a device of a UPnP device description.
type xmlDevice struct {
	DeviceType string `xml:"deviceType"`
	Services   []struct {
		ServiceType string `xml:"serviceType"`
		ControlURL  string `xml:"controlURL"`
	} `xml:"serviceList>service"`
	Devices []xmlDevice `xml:"deviceList>device"`
}

// decodeDescription finds the preferred WAN connection service in a device
// description and returns its type and control URL, resolved against
// URLBase or location.
func decodeDescription(b []byte, location *url.URL, gw netip.Addr) (service, controlURL string, err error) {
	var root struct {
		URLBase string    `xml:"URLBase"`
		Device  xmlDevice `xml:"device"`
	}
	if err := newXMLDecoder(b).Decode(&root); err != nil {
		return "", "", malformed(UPnP, "device description: %v", err)
	}
	found := map[string]string{}
	var walk func(d *xmlDevice)
	walk = func(d *xmlDevice) {
		for _, s := range d.Services {
			st := strings.TrimSpace(s.ServiceType)
			if _, ok := found[st]; !ok {
				found[st] = strings.TrimSpace(s.ControlURL)
			}
		}
		for i := range d.Devices {
			walk(&d.Devices[i])
		}
	}
	walk(&root.Device)
	base := location
	if root.URLBase != "" {
		if u, err := url.Parse(strings.TrimSpace(root.URLBase)); err == nil {
			base = u
		}
	}
	for _, st := range wanServices {
		ctrl, ok := found[st]
		if !ok {
			continue
		}
		u, err := gatewayURL(base, ctrl, gw)
		if err != nil {
			return "", "", err
		}
		return st, u.String(), nil
	}
	return "", "", fmt.Errorf("portmap: upnp: no WAN connection service in the device description: %w", ErrNotSupported)
}

func newXMLDecoder(b []byte) *xml.Decoder {
	d := xml.NewDecoder(bytes.NewReader(b))
	// Gateways declare assorted charsets for what is ASCII in practice.
	d.CharsetReader = func(_ string, r io.Reader) (io.Reader, error) { return r, nil }
	return d
}

// httpClient returns an HTTP client that dials through the Client's dialer,
// with bounded headers, no proxy, no redirects and no idle connections.
func (c *Client) httpClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				return c.s.dial(ctx, "tcp4", addr)
			},
			DisableKeepAlives:      true,
			MaxResponseHeaderBytes: maxHTTPHeader,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// fetch does an HTTP request and returns the status and the body, read to
// at most maxHTTPBody bytes.
func (c *Client) fetch(req *http.Request) (int, []byte, error) {
	hc := c.httpClient()
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("portmap: upnp: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxHTTPBody+1))
	if err != nil {
		return 0, nil, fmt.Errorf("portmap: upnp: %s %s: %w", req.Method, req.URL, err)
	}
	if len(body) > maxHTTPBody {
		return 0, nil, malformed(UPnP, "%s %s: body over %d bytes", req.Method, req.URL, maxHTTPBody)
	}
	return resp.StatusCode, body, nil
}

// describe reads the device description at location.
func (c *Client) describe(ctx context.Context, gw netip.Addr, location string) (*igd, error) {
	loc, err := gatewayURL(nil, location, gw)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
	if err != nil {
		return nil, malformed(UPnP, "LOCATION %q: %v", trim(location), err)
	}
	status, body, err := c.fetch(req)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, malformed(UPnP, "device description: HTTP status %d", status)
	}
	st, ctrl, err := decodeDescription(body, loc, gw)
	if err != nil {
		return nil, err
	}
	return &igd{gateway: gw, service: st, controlURL: ctrl}, nil
}

// findIGD returns the gateway's WAN service, from the cache or by discovery.
func (c *Client) findIGD(ctx context.Context, gw netip.Addr) (*igd, error) {
	c.mu.Lock()
	d := c.igd
	c.mu.Unlock()
	if d != nil && d.gateway == gw {
		return d, nil
	}
	d, err := c.discover(ctx, gw)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.igd = d
	c.mu.Unlock()
	return d, nil
}

// forget drops d from the cache after it failed.
func (c *Client) forget(d *igd) {
	c.mu.Lock()
	if c.igd == d {
		c.igd = nil
	}
	c.mu.Unlock()
}

type soapArg struct{ name, value string }

// encodeSOAPRequest returns the SOAP envelope of an action.
func encodeSOAPRequest(service, action string, args []soapArg) []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0"?>` + "\r\n" +
		`<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>`)
	fmt.Fprintf(&b, `<u:%s xmlns:u="%s">`, action, service)
	for _, a := range args {
		fmt.Fprintf(&b, "<%s>", a.name)
		xml.EscapeText(&b, []byte(a.value)) //nolint:errcheck // bytes.Buffer does not fail
		fmt.Fprintf(&b, "</%s>", a.name)
	}
	fmt.Fprintf(&b, `</u:%s></s:Body></s:Envelope>`, action)
	return b.Bytes()
}

// decodeSOAPResponse decodes the answer to action: the arguments of its
// <actionResponse> by name, or the SOAP fault's UPnP error as a
// *ResultError.
func decodeSOAPResponse(status int, body []byte, action string) (map[string]string, error) {
	d := newXMLDecoder(body)
	inBody := false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, malformed(UPnP, "%s answer: %v", action, err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		if !inBody {
			inBody = se.Name.Local == "Body"
			continue
		}
		switch se.Name.Local {
		case "Fault":
			var f struct {
				Code string `xml:"detail>UPnPError>errorCode"`
				Desc string `xml:"detail>UPnPError>errorDescription"`
			}
			if err := d.DecodeElement(&f, &se); err != nil {
				return nil, malformed(UPnP, "%s fault: %v", action, err)
			}
			code, err := strconv.Atoi(strings.TrimSpace(f.Code))
			if err != nil {
				return nil, malformed(UPnP, "%s fault: errorCode %q", action, trim(f.Code))
			}
			return nil, &ResultError{Protocol: UPnP, Code: code, Description: trim(strings.TrimSpace(f.Desc))}
		case action + "Response":
			if status != http.StatusOK {
				return nil, malformed(UPnP, "%s answer with HTTP status %d", action, status)
			}
			var args struct {
				Args []struct {
					XMLName xml.Name
					Value   string `xml:",chardata"`
				} `xml:",any"`
			}
			if err := d.DecodeElement(&args, &se); err != nil {
				return nil, malformed(UPnP, "%s answer: %v", action, err)
			}
			out := make(map[string]string, len(args.Args))
			for _, a := range args.Args {
				out[a.XMLName.Local] = strings.TrimSpace(a.Value)
			}
			return out, nil
		default:
			return nil, malformed(UPnP, "%s answer: unexpected element <%s>", action, trim(se.Name.Local))
		}
	}
	return nil, malformed(UPnP, "%s answer (HTTP status %d) without a SOAP body", action, status)
}

// call invokes action on d's control URL.
func (c *Client) call(ctx context.Context, d *igd, action string, args ...soapArg) (map[string]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.controlURL, bytes.NewReader(encodeSOAPRequest(d.service, action, args)))
	if err != nil {
		return nil, malformed(UPnP, "control URL %q: %v", trim(d.controlURL), err)
	}
	req.Header.Set("Content-Type", `text/xml; charset="utf-8"`)
	req.Header.Set("SOAPAction", fmt.Sprintf(`"%s#%s"`, d.service, action))
	status, body, err := c.fetch(req)
	if err != nil {
		return nil, err
	}
	return decodeSOAPResponse(status, body, action)
}

// upnpExternal asks d for the external address.
func (c *Client) upnpExternal(ctx context.Context, d *igd) (netip.Addr, error) {
	out, err := c.call(ctx, d, "GetExternalIPAddress")
	if err != nil {
		return netip.Addr{}, err
	}
	a, err := netip.ParseAddr(out["NewExternalIPAddress"])
	if err != nil || !a.Unmap().Is4() || a.IsUnspecified() {
		return netip.Addr{}, malformed(UPnP, "external address %q", trim(out["NewExternalIPAddress"]))
	}
	return a.Unmap(), nil
}

// externalUPnP discovers the gateway's IGD and asks for its external address.
func (c *Client) externalUPnP(ctx context.Context, gw netip.Addr) (netip.Addr, error) {
	d, err := c.findIGD(ctx, gw)
	if err != nil {
		return netip.Addr{}, err
	}
	a, err := c.upnpExternal(ctx, d)
	if err != nil {
		c.forgetUnlessRefused(d, err)
	}
	return a, err
}

// forgetUnlessRefused drops d from the cache unless err is the gateway's
// answer.
func (c *Client) forgetUnlessRefused(d *igd, err error) {
	var re *ResultError
	if !errors.As(err, &re) {
		c.forget(d)
	}
}

// localFor returns the address to map to: the configured one, or the local
// address of a UDP socket connected to the gateway (no packet is sent).
func (c *Client) localFor(ctx context.Context, gw netip.Addr) (netip.Addr, error) {
	if c.s.localAddr.IsValid() {
		return c.s.localAddr, nil
	}
	conn, local, err := c.dialGateway(ctx, gw)
	if err != nil {
		return netip.Addr{}, err
	}
	conn.Close()
	return local, nil
}

func upnpProtocol(transport string) string { return strings.ToUpper(transport) }

// mapUPnP maps a port with AddPortMapping, renewing prev if it is valid
// (the same external port again).
func (c *Client) mapUPnP(ctx context.Context, gw netip.Addr, req request, prev Mapping) (Mapping, error) {
	d, err := c.findIGD(ctx, gw)
	if err != nil {
		return Mapping{}, err
	}
	m, err := c.addPortMapping(ctx, d, req, prev)
	if err != nil {
		c.forgetUnlessRefused(d, err)
	}
	return m, err
}

func (c *Client) addPortMapping(ctx context.Context, d *igd, req request, prev Mapping) (Mapping, error) {
	local, err := c.localFor(ctx, d.gateway)
	if err != nil {
		return Mapping{}, err
	}
	ext, err := c.upnpExternal(ctx, d)
	if err != nil {
		return Mapping{}, err
	}
	port := req.internalPort
	if prev.External.IsValid() {
		port = prev.External.Port()
	}
	lease := req.lifetime
	for attempt := 0; ; attempt++ {
		_, err = c.call(ctx, d, "AddPortMapping",
			soapArg{"NewRemoteHost", ""},
			soapArg{"NewExternalPort", strconv.Itoa(int(port))},
			soapArg{"NewProtocol", upnpProtocol(req.transport)},
			soapArg{"NewInternalPort", strconv.Itoa(int(req.internalPort))},
			soapArg{"NewInternalClient", local.String()},
			soapArg{"NewEnabled", "1"},
			soapArg{"NewPortMappingDescription", c.s.description},
			soapArg{"NewLeaseDuration", strconv.Itoa(int(lease / time.Second))},
		)
		var re *ResultError
		switch {
		case err == nil:
			return Mapping{
				External:   netip.AddrPortFrom(ext, port),
				Lifetime:   lease,
				local:      local,
				controlURL: d.controlURL,
				service:    d.service,
			}, nil
		case attempt >= upnpConflictRetries || !errors.As(err, &re):
			return Mapping{}, err
		case re.Code == upnpConflict:
			port = uint16(upnpDynamicPortsFrom + rand.IntN(upnpDynamicPortsTo-upnpDynamicPortsFrom+1))
		case re.Code == upnpOnlyPermanentLeases && lease != 0:
			lease = 0 // until deleted
		default:
			return Mapping{}, err
		}
	}
}

// deleteUPnP removes m with DeletePortMapping on the control URL that made
// it.
func (c *Client) deleteUPnP(ctx context.Context, m Mapping) error {
	if m.controlURL == "" {
		return errors.New("portmap: upnp: mapping without a control URL")
	}
	d := &igd{gateway: m.gateway, service: m.service, controlURL: m.controlURL}
	_, err := c.call(ctx, d, "DeletePortMapping",
		soapArg{"NewRemoteHost", ""},
		soapArg{"NewExternalPort", strconv.Itoa(int(m.External.Port()))},
		soapArg{"NewProtocol", upnpProtocol(m.Transport)},
	)
	var re *ResultError
	if errors.As(err, &re) && re.Code == upnpNoSuchEntry {
		return nil
	}
	return err
}
