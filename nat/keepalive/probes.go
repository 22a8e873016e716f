package keepalive

import (
	"math"
	"time"
)

// tcpState is what the kernel tells of a TCP socket's recent traffic
// (Linux TCP_INFO), as instants.
type tcpState struct {
	lastData   time.Time // the last segment carrying data, either way
	lastAck    time.Time // the last acknowledgement received
	rtt        time.Duration
	unanswered int // keep-alive probes sent since the last answer
}

// probeCount counts a socket's keep-alive probes from its TCP state. The
// kernel probes a socket that has received nothing for the idle time (and,
// after a probe, looks again only an interval later), and the answer, a
// bare acknowledgement, starts the next wait: on a socket idle since an
// instant A, with every probe answered, answers come about every
// max(idle, interval) + rtt after A. So the acknowledgements received
// without data since A tell how many probes were sent, however rarely the
// socket is looked at. A probe not yet answered shows in the kernel's count
// of unanswered probes; one lost and sent again counts twice, as it crossed
// the router twice. A change of the idle time starts the count over from
// the last acknowledgement, from which the kernel times its next probe.
type probeCount struct {
	total   uint64
	base    time.Time // no stretch starts before: the last change of idle
	stretch time.Time // start of the idle stretch being counted
	counted time.Time // the last answer counted, or the stretch's start
	pending int       // unanswered probes counted since it
}

// jitter is how far apart two readings of one instant may be: TCP_INFO
// gives ages in milliseconds, read at slightly different moments.
const jitter = 250 * time.Millisecond

// observe updates the count from st, with idle and interval the socket's
// keep-alive settings, and returns the total.
func (p *probeCount) observe(st tcpState, idle, interval time.Duration) uint64 {
	start := st.lastData
	if p.base.After(start) {
		start = p.base
	}
	if start.Sub(p.stretch) > jitter {
		p.stretch, p.counted, p.pending = start, start, 0
	}
	period := max(idle, interval) + st.rtt
	if gap := st.lastAck.Sub(p.counted); gap > min(idle, interval)/2 && gap > jitter {
		// The first answer since the last one counted came after the
		// pending probes' intervals; each further one a period later.
		first := idle + time.Duration(p.pending)*interval + st.rtt
		if p.pending == 0 {
			first = period
		}
		k := 1 + int(math.Round(float64(gap-first)/float64(period)))
		p.total += uint64(max(k, 1))
		p.counted, p.pending = st.lastAck, 0
	}
	if st.unanswered > p.pending {
		p.total += uint64(st.unanswered - p.pending)
		p.pending = st.unanswered
	}
	return p.total
}

// restart is called when the idle time changes, with the socket's state
// then.
func (p *probeCount) restart(st tcpState) {
	p.base = st.lastAck
	if st.lastData.After(p.base) {
		p.base = st.lastData
	}
	p.stretch, p.counted, p.pending = p.base, p.base, 0
}
