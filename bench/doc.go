// Package bench is dropship's side-by-side benchmark against plain OpenSSH
// (issue 8). It holds no product code: the benchmark is TestBench, which runs
// only when DROPSHIP_BENCH=1 (`make bench`), starts a real sshd on loopback,
// the built dropship agent, and the OpenSSH tools a user would otherwise use
// (ssh, scp, tar over ssh, an inotifywait + scp loop), measures them in one
// run and writes the table to bench/results/. README.md in this folder says
// what every row means.
package bench
