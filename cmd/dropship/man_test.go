package main

import (
	"flag"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// manPage is the manual page the packages install as dropship(1).
const manPage = "../../docs/dropship.1"

// TestManPage checks that docs/dropship.1 has a section for every command
// that names each of its flags, a synopsis line for it, and that groff
// formats it without a warning.
func TestManPage(t *testing.T) {
	b, err := os.ReadFile(manPage)
	if err != nil {
		t.Fatal(err)
	}
	man := string(b)
	synopsis, _, _ := strings.Cut(man[strings.Index(man, ".SH SYNOPSIS"):], ".SH DESCRIPTION")
	sections := regexp.MustCompile(`(?m)^\.S[SH] `).Split(man, -1)
	for _, c := range commands() {
		if !strings.Contains(synopsis, ".B dropship "+c.name+"\n") {
			t.Errorf("%s: the synopsis has no line for %s", manPage, c.name)
		}
		var section string
		for _, s := range sections {
			if strings.HasPrefix(s, `"`+c.name+` \(em `) {
				section = s
			}
		}
		if section == "" {
			t.Errorf(`%s: no section .SS "%s \(em …" for the command`, manPage, c.name)
			continue
		}
		commandFlags(t, c.name).VisitAll(func(f *flag.Flag) {
			roff := `\-` + strings.ReplaceAll(f.Name, "-", `\-`)
			if !regexp.MustCompile(regexp.QuoteMeta(roff) + `\b`).MatchString(section) {
				t.Errorf("%s: the section of %s does not name its flag -%s (as %s)", manPage, c.name, f.Name, roff)
			}
		})
	}
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Log("no groff: the page's formatting is not checked")
		return
	}
	out, err := exec.Command(groff, "-man", "-ww", "-z", manPage).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("groff -man -ww: %v\n%s", err, out)
	}
}
