package rendezvous

// WithStandbyTiming exposes withStandbyTiming to the package's tests.
var WithStandbyTiming = withStandbyTiming
