//go:build !race

package e2e

// raceBuild builds the binary under test with the race detector too.
const raceBuild = false
