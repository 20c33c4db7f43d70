package journal

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// State is where a file is in its life.
type State string

// File states, in the order a file normally goes through them.
const (
	Queued  State = "queued"  // seen and ready; waiting for its turn (or its next attempt)
	Sending State = "sending" // an upload is running (or was, when the agent stopped)
	Sent    State = "sent"    // delivery confirmed; the source is not yet archived or deleted
	Done    State = "done"    // sent and post-processed; kept only with after = keep
	Failed  State = "failed"  // gave up; waits for `dropship retry` or for the target to recover
)

// Record is what the journal knows about one source file.
type Record struct {
	Key    string `json:"key"` // Key(watch, rel)
	ID     string `json:"id"`  // transfer id, stable across attempts of this version of the file
	Watch  string `json:"watch"`
	Target string `json:"target"`
	Path   string `json:"path"` // absolute local path
	Rel    string `json:"rel"`  // slash-separated path below the watch folder
	// RemoteRel is the path below the target's remote_dir when a route
	// renames the file; "" means Rel.
	RemoteRel  string    `json:"remote_rel,omitempty"`
	Marker     string    `json:"marker,omitempty"`
	Size       int64     `json:"size"`
	ModTime    time.Time `json:"mtime"`
	Dev        uint64    `json:"dev"`
	Inode      uint64    `json:"inode"`
	SHA256     string    `json:"sha256,omitempty"`
	Reason     string    `json:"reason,omitempty"` // why the watcher judged it ready
	State      State     `json:"state"`
	Attempts   int       `json:"attempts"`
	NextTry    time.Time `json:"next_try,omitzero"`
	LastClass  string    `json:"last_class,omitempty"`
	LastError  string    `json:"last_error,omitempty"`
	QueuedAt   time.Time `json:"queued_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	EventIDs   []string  `json:"event_ids,omitempty"` // lifecycle events written for this transfer
	ExitCode   int       `json:"exit_code"`
	RemotePath string    `json:"remote_path,omitempty"`
	// Warning says what looks wrong about this version of the file (it
	// reappeared right after an earlier version was delivered, say).
	Warning string `json:"warning,omitempty"`
}

// SameFile reports whether r describes the same version of a file as the
// given identity: path, size, mtime and inode all equal.
func (r *Record) SameFile(size int64, mtime time.Time, dev, inode uint64) bool {
	return r.Size == size && r.ModTime.Equal(mtime) && r.Dev == dev && r.Inode == inode
}

// Key is the journal key of the file rel below the watch folder watch.
func Key(watch, rel string) string { return watch + "\x00" + rel }

// Event is a lifecycle event waiting in the outbox: the NATS subject and the
// complete CloudEvent JSON. The journal does not look inside.
type Event struct {
	ID      string `json:"id"`
	Subject string `json:"subject"`
	Data    []byte `json:"data"`
}

// Entry is an Event with its position in the outbox.
type Entry struct {
	Seq uint64
	Event
}

// Op is one change applied by Apply: put Record (or delete Delete) and append
// Events to the outbox.
type Op struct {
	Put    *Record
	Delete string
	Events []Event
	// Fetched records a version fetched from a remote source.
	Fetched *Fetched
}

// Fetched is a version of a file of a remote source that was fetched: it
// is not fetched again while the source lists it with this size and mtime.
type Fetched struct {
	Source    string    `json:"source"`
	Rel       string    `json:"rel"`
	Size      int64     `json:"size"`
	ModTime   time.Time `json:"mtime"`
	SHA256    string    `json:"sha256"`
	FetchedAt time.Time `json:"fetched_at"`
}

func fetchedKey(source, rel string) []byte { return []byte(source + "\x00" + rel) }

var (
	filesBucket   = []byte("files")
	outboxBucket  = []byte("outbox")
	fetchedBucket = []byte("fetched")
)

// ErrLocked says another process holds the journal.
var ErrLocked = errors.New("the journal is locked by another process")

// Journal is the agent's durable state: a bbolt database with the file
// records and the outbox of lifecycle events. A change to a record and the
// events it produces are written in one transaction, so a crash can never
// leave one without the other.
type Journal struct {
	db   *bolt.DB
	path string
}

// Open opens (creating when needed) the journal at path. Only one process may
// have it open: a second gets ErrLocked within a second.
func Open(path string) (*Journal, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create state folder: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoFreelistSync: true})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open journal %s: %w (is another dropship running with the same state_dir?)", path, ErrLocked)
		}
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{filesBucket, outboxBucket, fetchedBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise journal %s: %w", path, err)
	}
	return &Journal{db: db, path: path}, nil
}

// Close closes the database. It is safe to call twice.
func (j *Journal) Close() error {
	if j == nil || j.db == nil {
		return nil
	}
	return j.db.Close()
}

// Apply performs ops in one transaction (one fsync), in order.
func (j *Journal) Apply(ops ...Op) error {
	if len(ops) == 0 {
		return nil
	}
	return j.db.Update(func(tx *bolt.Tx) error {
		files := tx.Bucket(filesBucket)
		outbox := tx.Bucket(outboxBucket)
		for _, op := range ops {
			if op.Put != nil {
				b, err := json.Marshal(op.Put)
				if err != nil {
					return fmt.Errorf("encode record %q: %w", op.Put.Path, err)
				}
				if err := files.Put([]byte(op.Put.Key), b); err != nil {
					return err
				}
			}
			if op.Delete != "" {
				if err := files.Delete([]byte(op.Delete)); err != nil {
					return err
				}
			}
			if f := op.Fetched; f != nil {
				b, err := json.Marshal(f)
				if err != nil {
					return err
				}
				if err := tx.Bucket(fetchedBucket).Put(fetchedKey(f.Source, f.Rel), b); err != nil {
					return err
				}
			}
			for _, ev := range op.Events {
				seq, err := outbox.NextSequence()
				if err != nil {
					return err
				}
				b, err := json.Marshal(ev)
				if err != nil {
					return err
				}
				if err := outbox.Put(seqKey(seq), b); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// Get returns the record for key, or nil.
func (j *Journal) Get(key string) (*Record, error) {
	var rec *Record
	err := j.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(filesBucket).Get([]byte(key))
		if b == nil {
			return nil
		}
		rec = new(Record)
		return json.Unmarshal(b, rec)
	})
	return rec, err
}

// Records calls fn for every record, in key order.
func (j *Journal) Records(fn func(*Record) error) error {
	return j.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(filesBucket).ForEach(func(k, v []byte) error {
			rec := new(Record)
			if err := json.Unmarshal(v, rec); err != nil {
				return fmt.Errorf("decode record %q: %w", k, err)
			}
			return fn(rec)
		})
	})
}

// Outbox returns up to max events, oldest first.
func (j *Journal) Outbox(max int) ([]Entry, error) {
	var out []Entry
	err := j.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(outboxBucket).Cursor()
		for k, v := c.First(); k != nil && len(out) < max; k, v = c.Next() {
			var e Entry
			if err := json.Unmarshal(v, &e.Event); err != nil {
				return fmt.Errorf("decode outbox entry %x: %w", k, err)
			}
			e.Seq = binary.BigEndian.Uint64(k)
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// Ack removes published events from the outbox.
func (j *Journal) Ack(seqs ...uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	return j.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(outboxBucket)
		for _, s := range seqs {
			if err := b.Delete(seqKey(s)); err != nil {
				return err
			}
		}
		return nil
	})
}

// OutboxLen is the number of events waiting to be published.
func (j *Journal) OutboxLen() int {
	n := 0
	_ = j.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(outboxBucket).Stats().KeyN
		return nil
	})
	return n
}

func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}

// FetchedOf returns the versions fetched from source, by relative path.
func (j *Journal) FetchedOf(source string) (map[string]Fetched, error) {
	out := map[string]Fetched{}
	prefix := []byte(source + "\x00")
	err := j.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(fetchedBucket).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var f Fetched
			if err := json.Unmarshal(v, &f); err != nil {
				return fmt.Errorf("decode fetched version %q: %w", k, err)
			}
			out[f.Rel] = f
		}
		return nil
	})
	return out, err
}

// Forget drops what the journal remembers of the fetched versions rels of
// source.
func (j *Journal) Forget(source string, rels []string) error {
	if len(rels) == 0 {
		return nil
	}
	return j.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(fetchedBucket)
		for _, rel := range rels {
			if err := b.Delete(fetchedKey(source, rel)); err != nil {
				return err
			}
		}
		return nil
	})
}
