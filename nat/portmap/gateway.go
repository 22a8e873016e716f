package portmap

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// Route flags of /proc/net/route.
const (
	rtfUp      = 0x1
	rtfGateway = 0x2
)

// defaultGateway reads the gateway of the IPv4 default route from a file
// in the format of Linux's /proc/net/route.
func defaultGateway(path string) (netip.Addr, error) {
	f, err := os.Open(path)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: %w", ErrNoGateway, err)
	}
	defer f.Close()
	return parseRoutes(io.LimitReader(f, 1<<20))
}

// parseRoutes returns the gateway of the up default route with the lowest
// metric. Lines are: Iface Destination Gateway Flags RefCnt Use Metric
// Mask ..., addresses in hex in host (little-endian) byte order.
func parseRoutes(r io.Reader) (netip.Addr, error) {
	sc := bufio.NewScanner(r)
	var best netip.Addr
	bestMetric := uint64(1<<64 - 1)
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 8 || f[1] != "00000000" || f[7] != "00000000" {
			continue
		}
		flags, err := strconv.ParseUint(f[3], 16, 32)
		if err != nil || flags&(rtfUp|rtfGateway) != rtfUp|rtfGateway {
			continue
		}
		metric, err := strconv.ParseUint(f[6], 10, 64)
		if err != nil {
			continue
		}
		raw, err := hex.DecodeString(f[2])
		if err != nil || len(raw) != 4 {
			continue
		}
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], binary.LittleEndian.Uint32(raw))
		gw := netip.AddrFrom4(a)
		if gw.IsUnspecified() || metric >= bestMetric {
			continue
		}
		best, bestMetric = gw, metric
	}
	if err := sc.Err(); err != nil {
		return netip.Addr{}, fmt.Errorf("%w: %w", ErrNoGateway, err)
	}
	if !best.IsValid() {
		return netip.Addr{}, fmt.Errorf("%w: no IPv4 default route", ErrNoGateway)
	}
	return best, nil
}
