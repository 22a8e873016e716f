package bench

import (
	"errors"
	"fmt"
	"time"

	"github.com/p2pos/rendezvous/dht"
)

func errorsIsNotFound(err error) bool { return errors.Is(err, dht.ErrNotFound) }

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func maxf(xs []float64) float64 {
	var m float64
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// pct returns the p-th percentile of sorted durations, formatted.
func pct(sorted []time.Duration, p int) string {
	if len(sorted) == 0 {
		return "-"
	}
	i := (len(sorted)*p + 99) / 100
	i = min(max(i-1, 0), len(sorted)-1)
	return fmt.Sprintf("%.1f ms", float64(sorted[i].Microseconds())/1000)
}
