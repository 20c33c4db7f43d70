package transfer

import (
	"os/exec"
	"runtime"
	"sync"
)

// Every client is started from one OS thread that lives as long as the
// process. Linux ties Pdeathsig (the client dies with the agent, so a kill -9
// of the agent cannot leave an upload running that the restarted agent sends
// again) to the thread that forked the child, not to the process: a child
// forked by a thread that exits later, as the thread of any goroutine that
// locked it and ended does, would be killed at that moment. Forking from this
// one thread makes Pdeathsig mean "when the agent dies".
//
// It is process-wide state by nature: there is one process to die with.
var spawner = sync.OnceValue(func() chan<- spawnRequest {
	reqs := make(chan spawnRequest)
	go func() {
		runtime.LockOSThread() // never unlocked: this thread must not exit
		for r := range reqs {
			r.done <- r.cmd.Start()
		}
	}()
	return reqs
})

type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

// start starts cmd from the spawner thread.
func start(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	spawner() <- spawnRequest{cmd: cmd, done: done}
	return <-done
}
