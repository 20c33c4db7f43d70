package watcher

import "container/heap"

// dueHeap orders the files waiting for a look by due time. It is the
// watcher's only timer wheel: one entry per pending file, one timer for all.
type dueHeap []*fileState

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}

func (h *dueHeap) Push(x any) {
	f := x.(*fileState)
	f.heapIdx = len(*h)
	*h = append(*h, f)
}

func (h *dueHeap) Pop() any {
	old := *h
	n := len(old)
	f := old[n-1]
	old[n-1] = nil
	f.heapIdx = -1
	*h = old[:n-1]
	return f
}

func (h *dueHeap) push(f *fileState) { heap.Push(h, f) }
func (h *dueHeap) pop() *fileState   { return heap.Pop(h).(*fileState) }
func (h *dueHeap) fix(f *fileState)  { heap.Fix(h, f.heapIdx) }
func (h *dueHeap) remove(f *fileState) {
	heap.Remove(h, f.heapIdx)
}

// outItem is a ready file waiting for the consumer.
type outItem struct {
	f    *fileState
	file File
	st   stamp
	dead bool // taken back: the file changed or went away before delivery
}

// outQueue is the FIFO of ready files. Each file has at most one live item,
// so its length is bounded by the number of files in the tree; dead items
// are dropped at the head or compacted away.
type outQueue struct {
	items []*outItem
	head  int
	dead  int
}

func (q *outQueue) push(it *outItem) { q.items = append(q.items, it) }

// peek returns the first live item, or nil.
func (q *outQueue) peek() *outItem {
	for q.head < len(q.items) && q.items[q.head].dead {
		q.items[q.head] = nil
		q.head++
		q.dead--
	}
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
		return nil
	}
	return q.items[q.head]
}

// pop removes the item peek returned.
func (q *outQueue) pop() {
	q.items[q.head] = nil
	q.head++
}

func (q *outQueue) cancel(it *outItem) {
	if it.dead {
		return
	}
	it.dead = true
	q.dead++
	if q.dead > 64 && q.dead > (len(q.items)-q.head)/2 {
		q.compact()
	}
}

func (q *outQueue) compact() {
	live := make([]*outItem, 0, len(q.items)-q.head-q.dead)
	for _, it := range q.items[q.head:] {
		if !it.dead {
			live = append(live, it)
		}
	}
	q.items, q.head, q.dead = live, 0, 0
}
