// Package config reads, defaults and validates dropship's TOML configuration.
//
// Parsing has no side effects. Every problem is reported at once as
// "file:line: key: message", so an operator fixes a broken file in one pass.
package config
