// Package config reads, defaults and validates dropship's TOML configuration.
//
// Parsing has no side effects. Every problem is reported at once as
// "file:line: key: message", so an operator fixes a broken file in one pass.
// Parse checks everything that needs no file system; Load adds the checks of
// watched folders and secret files and makes every path absolute.
//
// The configuration names secret files (or systemd credentials, as
// "credential:NAME") but never holds a secret: ReadSecret reads one when it
// is needed, after checking that only its owner can read it.
package config
