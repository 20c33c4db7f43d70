package journal

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func TestRecordsAndOutboxSurviveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "journal.db")
	j, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	mtime := time.Unix(1700000000, 123456789)
	rec := &Record{Key: Key("/drop", "a b.txt"), ID: "t1", Watch: "/drop", Path: "/drop/a b.txt", Rel: "a b.txt", Size: 3, ModTime: mtime, Inode: 7, State: Queued}
	if err := j.Apply(Op{Put: rec, Events: []Event{{ID: "e1", Subject: "s.queued", Data: []byte(`{"id":"e1"}`)}}}); err != nil {
		t.Fatal(err)
	}
	rec2 := *rec
	rec2.State = Sending
	if err := j.Apply(Op{Put: &rec2, Events: []Event{{ID: "e2", Subject: "s.started"}}}); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	j, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	got, err := j.Get(rec.Key)
	if err != nil || got == nil {
		t.Fatalf("Get = %v, %v", got, err)
	}
	if got.State != Sending || !got.SameFile(3, mtime, 0, 7) {
		t.Errorf("record after reopen = %+v", got)
	}
	entries, err := j.Outbox(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].ID != "e1" || entries[1].ID != "e2" || entries[0].Seq >= entries[1].Seq {
		t.Fatalf("outbox = %+v, want e1 then e2", entries)
	}
	if err := j.Ack(entries[0].Seq); err != nil {
		t.Fatal(err)
	}
	if n := j.OutboxLen(); n != 1 {
		t.Errorf("outbox length after ack = %d, want 1", n)
	}
	if err := j.Apply(Op{Delete: rec.Key}); err != nil {
		t.Fatal(err)
	}
	if got, _ := j.Get(rec.Key); got != nil {
		t.Errorf("deleted record still there: %+v", got)
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.db")
	j, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if _, err := Open(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: err = %v, want ErrLocked", err)
	}
}

func BenchmarkApplyBatch(b *testing.B) {
	j, err := Open(filepath.Join(b.TempDir(), "journal.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	for i := 0; i < b.N; i++ {
		ops := make([]Op, 100)
		for k := range ops {
			key := fmt.Sprintf("%d-%d", i, k)
			ops[k] = Op{Put: &Record{Key: key, Path: "/d/" + key, State: Queued}, Events: []Event{{ID: key, Subject: "s", Data: make([]byte, 600)}}}
		}
		if err := j.Apply(ops...); err != nil {
			b.Fatal(err)
		}
	}
}
