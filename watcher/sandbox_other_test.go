//go:build !linux

package watcher

import "testing"

func runSandboxed(t *testing.T, _ string, _ []string) {
	t.Skip("sandboxed scripts need Linux (user namespaces, setuid children)")
}
