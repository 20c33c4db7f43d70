//go:build !linux

package watcher

import (
	"errors"
	"os"
)

// SelfAbilities returns the abilities of this process: outside Linux there
// are no leases, and other processes' files cannot be seen.
func SelfAbilities() Abilities { return Abilities{UID: os.Geteuid()} }

// AbilitiesOf cannot tell anything outside Linux.
func AbilitiesOf(int) (Abilities, error) {
	return Abilities{}, errors.New("not supported on this system")
}

func remoteFS(string) string { return "" }
