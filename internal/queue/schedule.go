package queue

import (
	"context"
	"sync"
	"time"

	"github.com/riverqueue/river"
)

// ScheduleArgs is the job a schedule enqueues at each tick: start a run of
// the flow. River's leader alone enqueues periodic jobs, so with several
// nodes each tick fires once.
type ScheduleArgs struct {
	Flow string `json:"flow"`
}

// Kind names the job kind in River's table.
func (ScheduleArgs) Kind() string { return "trustflow.schedule" }

// ScanArgs is the job of the periodic expiry scan.
type ScanArgs struct{}

// Kind names the job kind in River's table.
func (ScanArgs) Kind() string { return "trustflow.scan" }

// Schedule is one periodic trigger.
type Schedule struct {
	// ID identifies the schedule; a changed schedule gets a new ID.
	ID   string
	Flow string
	// Spec says when it fires next.
	Spec interface{ Next(time.Time) time.Time }
}

// schedules tracks the periodic jobs this node has registered.
type schedules struct {
	mu  sync.Mutex
	ids map[string]bool
}

// SetSchedules makes the registered schedules exactly specs: new ones are
// added, vanished or changed ones removed. A missed tick is not caught up
// (a node that was down fires no burst of runs).
func (q *Queue) SetSchedules(specs []Schedule) error {
	q.sched.mu.Lock()
	defer q.sched.mu.Unlock()
	want := map[string]Schedule{}
	for _, s := range specs {
		want[s.ID] = s
	}
	var gone []string
	for id := range q.sched.ids {
		if _, ok := want[id]; !ok {
			gone = append(gone, id)
		}
	}
	if len(gone) > 0 {
		q.client.PeriodicJobs().RemoveManyByID(gone)
		for _, id := range gone {
			delete(q.sched.ids, id)
		}
	}
	for id, s := range want {
		if q.sched.ids[id] {
			continue
		}
		flow := s.Flow
		job := river.NewPeriodicJob(s.Spec, func() (river.JobArgs, *river.InsertOpts) {
			return ScheduleArgs{Flow: flow}, &river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true, ByPeriod: time.Second}}
		}, &river.PeriodicJobOpts{ID: id})
		if _, err := q.client.PeriodicJobs().AddSafely(job); err != nil {
			return err
		}
		q.sched.ids[id] = true
	}
	return nil
}

// every is a fixed-interval schedule.
type every time.Duration

func (e every) Next(t time.Time) time.Time { return t.Add(time.Duration(e)) }

func (q *Queue) addScan(interval time.Duration) {
	q.client.PeriodicJobs().Add(river.NewPeriodicJob(every(interval), func() (river.JobArgs, *river.InsertOpts) {
		return ScanArgs{}, &river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true, ByPeriod: interval}}
	}, &river.PeriodicJobOpts{ID: "trustflow.scan", RunOnStart: true}))
}

// runScheduled adapts a handler to River's worker.
func runScheduled(h func(ctx context.Context, flow string) error) river.Worker[ScheduleArgs] {
	return river.WorkFunc(func(ctx context.Context, job *river.Job[ScheduleArgs]) error { return h(ctx, job.Args.Flow) })
}

func runScan(h func(ctx context.Context) error) river.Worker[ScanArgs] {
	return river.WorkFunc(func(ctx context.Context, job *river.Job[ScanArgs]) error { return h(ctx) })
}
