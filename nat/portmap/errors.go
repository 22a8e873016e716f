package portmap

import (
	"errors"
	"fmt"
	"net"
)

// Errors callers branch on with errors.Is. Returned errors wrap them with
// details.
var (
	// ErrNoGateway is returned when the Client has no gateway to ask: none
	// was given with WithGateway and the routing table has no IPv4 default
	// route.
	ErrNoGateway = errors.New("portmap: no default gateway")

	// ErrNotSupported is returned when the gateway does not speak a
	// protocol: no answer within the timeout, an ICMP port unreachable,
	// no UPnP IGD found, or a result code saying the version or operation
	// is unsupported. Map returns it when no protocol answered at all.
	ErrNotSupported = errors.New("portmap: protocol not supported by the gateway")

	// ErrMalformed is returned for an answer that does not decode: too
	// short, too long, wrong version or opcode, or HTTP and XML that break
	// the protocol.
	ErrMalformed = errors.New("portmap: malformed answer")

	// ErrClosed is returned by a Keeper's methods after Close. It matches
	// net.ErrClosed.
	ErrClosed = fmt.Errorf("portmap: keeper closed: %w", net.ErrClosed)
)

// ResultError is a refusal from the gateway: a non-zero NAT-PMP or PCP
// result code, or a UPnP errorCode in a SOAP fault. It matches
// ErrNotSupported with errors.Is when the code says the protocol version
// or operation is unsupported.
type ResultError struct {
	Protocol Protocol
	// Code is the result code (NAT-PMP, PCP) or UPnP errorCode.
	Code int
	// Description is the UPnP errorDescription, empty for NAT-PMP and PCP.
	Description string
}

// Error names the protocol, the code and its meaning.
func (e *ResultError) Error() string {
	name := e.Description
	if name == "" {
		name = resultName(e.Protocol, e.Code)
	}
	return fmt.Sprintf("portmap: %s result %d (%s)", e.Protocol, e.Code, name)
}

// Is reports whether target is ErrNotSupported and the code means it.
func (e *ResultError) Is(target error) bool {
	if target != ErrNotSupported {
		return false
	}
	switch e.Protocol {
	case NATPMP:
		return e.Code == pmpUnsupportedVersion || e.Code == pmpUnsupportedOpcode
	case PCP:
		return e.Code == pcpUnsupportedVersion || e.Code == pcpUnsupportedOpcode
	case UPnP:
		return e.Code == 401 // Invalid Action
	}
	return false
}

// resultName returns the standard name of a result code.
func resultName(p Protocol, code int) string {
	var names []string
	switch p {
	case NATPMP:
		names = []string{"success", "unsupported version", "not authorized", "network failure", "out of resources", "unsupported opcode"}
	case PCP:
		names = []string{"SUCCESS", "UNSUPP_VERSION", "NOT_AUTHORIZED", "MALFORMED_REQUEST", "UNSUPP_OPCODE", "UNSUPP_OPTION",
			"MALFORMED_OPTION", "NETWORK_FAILURE", "NO_RESOURCES", "UNSUPP_PROTOCOL", "USER_EX_QUOTA", "CANNOT_PROVIDE_EXTERNAL",
			"ADDRESS_MISMATCH", "EXCESSIVE_REMOTE_PEERS"}
	case UPnP:
		switch code {
		case 401:
			return "Invalid Action"
		case 402:
			return "Invalid Args"
		case 501:
			return "Action Failed"
		case 606:
			return "Action not authorized"
		case 714:
			return "NoSuchEntryInArray"
		case 715:
			return "WildCardNotPermittedInSrcIP"
		case 716:
			return "WildCardNotPermittedInExtPort"
		case 718:
			return "ConflictInMappingEntry"
		case 724:
			return "SamePortValuesRequired"
		case 725:
			return "OnlyPermanentLeasesSupported"
		case 728:
			return "NoPortMapsAvailable"
		case 729:
			return "ConflictWithOtherMechanisms"
		}
	}
	if code >= 0 && code < len(names) {
		return names[code]
	}
	return "unknown"
}

// malformed returns an error wrapping ErrMalformed.
func malformed(p Protocol, format string, args ...any) error {
	return fmt.Errorf("portmap: %s: %s: %w", p, fmt.Sprintf(format, args...), ErrMalformed)
}
