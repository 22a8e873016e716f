package rendezvous

// WithStandbyTiming exposes withStandbyTiming to the package's tests.
var WithStandbyTiming = withStandbyTiming

// WithUpgradeTiming exposes withUpgradeTiming to the package's tests.
var WithUpgradeTiming = withUpgradeTiming

// WithoutDCUtR exposes withoutDCUtR to the package's tests.
var WithoutDCUtR = withoutDCUtR
