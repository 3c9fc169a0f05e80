package datapath

// ValueRoundTrip writes c as the map value and reads it back, as Set and
// Lookup do, for the external tests.
func ValueRoundTrip(c Config) (Config, error) {
	r, err := c.value()
	return configOf(r), err
}
