package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/errs"
	flowpkg "github.com/trustflow/trustflow/internal/flow"
	"github.com/trustflow/trustflow/internal/queue"
	"github.com/trustflow/trustflow/internal/store"
	"github.com/trustflow/trustflow/internal/truststore"
)

// expiryThresholds are the days before expiry at which identity.expiring
// and ca.expiring fire, once each.
var expiryThresholds = []int{30, 14, 7, 1}

// scheduleSpecs reads every flow with a schedule trigger.
func (e *Engine) scheduleSpecs(ctx context.Context) ([]queue.Schedule, error) {
	names, err := e.st.FlowsWithTrigger(ctx, "schedule")
	if err != nil {
		return nil, err
	}
	var out []queue.Schedule
	for _, n := range names {
		head, err := e.st.FlowByName(ctx, n)
		if errors.Is(err, store.ErrNotFound) {
			continue
		} else if err != nil {
			return nil, err
		}
		d, err := e.document(ctx, n, head.CurrentVersion)
		if err != nil {
			return nil, err
		}
		tz := d.Trigger.Timezone
		if tz == "" {
			tz = "UTC"
		}
		spec, err := cron.ParseStandard("CRON_TZ=" + tz + " " + d.Trigger.Cron)
		if err != nil {
			e.log.Warn("flow schedule does not parse", "flow", n, "cron", d.Trigger.Cron, "err", err)
			continue
		}
		out = append(out, queue.Schedule{ID: fmt.Sprintf("flow:%s/v%d", n, head.CurrentVersion), Flow: n, Spec: spec})
	}
	return out, nil
}

// SyncSchedules registers this node's periodic triggers from the flows in
// the database. It runs at start, after each local apply or removal, and
// every ScheduleSync (another node's changes); webhook state whose time is
// up is purged on the same tick.
func (e *Engine) SyncSchedules(ctx context.Context) error {
	specs, err := e.scheduleSpecs(ctx)
	if err != nil {
		return fmt.Errorf("engine: sync schedules: %w", err)
	}
	if err := e.q.SetSchedules(specs); err != nil {
		return fmt.Errorf("engine: sync schedules: %w", err)
	}
	return nil
}

func (e *Engine) syncLoop(ctx context.Context) {
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := e.SyncSchedules(ctx); err != nil && ctx.Err() == nil {
				e.log.Warn("sync schedules", "err", err)
			}
			if err := e.PurgeWebhooks(ctx); err != nil && ctx.Err() == nil {
				e.log.Warn("purge webhooks", "err", err)
			}
		}
	}
}

// onSchedule starts one scheduled run.
func (e *Engine) onSchedule(ctx context.Context, flow string) error {
	head, err := e.st.FlowByName(ctx, flow)
	if errors.Is(err, store.ErrNotFound) || (err == nil && head.TriggerKind != "schedule") {
		return nil // removed or re-triggered since the tick was enqueued
	} else if err != nil {
		return err
	}
	_, err = e.StartRun(ctx, StartRequest{Flow: flow, Trigger: "schedule", Actor: audit.System})
	if errs.CodeOf(err) == flowpkg.CodeInvalidInput {
		e.log.Warn("scheduled run refused its (empty) input", "flow", flow, "err", err)
		return nil
	}
	if errs.KindOf(err) == errs.Limit {
		e.log.Warn("scheduled run not started: the flow is at a limit", "flow", flow, "err", err)
		return nil
	}
	return err
}

// Scan emits identity.expiring and ca.expiring when an active identity or
// a CA certificate crosses 30, 14, 7 and 1 days before expiry, once per
// threshold (a certificate first seen past several thresholds fires for
// the nearest one only).
func (e *Engine) Scan(ctx context.Context) error {
	now := e.clock.Now()
	ids, err := e.trust.List(ctx, time.Duration(expiryThresholds[0]+1)*24*time.Hour)
	if err != nil {
		return err
	}
	for _, id := range ids {
		v, ok := id.Active()
		if !ok || v.NotAfter == nil {
			continue
		}
		payload := map[string]any{"identity": id.Name, "version": int64(v.Version), "serial": v.Serial, "fingerprint_sha256": v.FingerprintSHA256,
			"subject": v.Subject, "not_after": v.NotAfter.UTC().Format(time.RFC3339)}
		if err := e.expiring(ctx, "identity.expiring", "identity/"+id.Name+"/"+v.FingerprintSHA256, *v.NotAfter, now, payload); err != nil {
			return err
		}
	}
	cas, err := e.trust.ListCAs(ctx)
	if err != nil {
		return err
	}
	for _, ca := range cas {
		for _, c := range ca.Certificates {
			payload := map[string]any{"ca": ca.Name, "serial": c.Serial, "fingerprint_sha256": c.FingerprintSHA256, "subject": c.Subject,
				"not_after": c.NotAfter.UTC().Format(time.RFC3339)}
			if err := e.expiring(ctx, "ca.expiring", "ca/"+ca.Name+"/"+c.FingerprintSHA256, c.NotAfter, now, payload); err != nil {
				return err
			}
		}
	}
	return nil
}

func (e *Engine) expiring(ctx context.Context, event, subject string, notAfter, now time.Time, payload map[string]any) error {
	left := notAfter.Sub(now).Hours() / 24
	crossed := -1
	for i, t := range expiryThresholds {
		if left <= float64(t) {
			crossed = i
		}
	}
	if crossed < 0 {
		return nil
	}
	return e.st.InTx(ctx, func(tx *store.Tx) error {
		fresh := false
		for i := 0; i <= crossed; i++ {
			isNew, err := tx.MarkEvent(ctx, fmt.Sprintf("%s/%s/%d", event, subject, expiryThresholds[i]), now)
			if err != nil {
				return err
			}
			fresh = fresh || (i == crossed && isNew)
		}
		if !fresh {
			return nil
		}
		payload["days_left"] = int64(math.Max(0, math.Floor(left)))
		payload["threshold_days"] = int64(expiryThresholds[crossed])
		if err := e.lockListeners(ctx, tx, event); err != nil {
			return err
		}
		if _, err := e.audit.Append(ctx, tx, audit.Entry{Actor: audit.System, Action: event, Target: subject, Details: payload}); err != nil {
			return err
		}
		return e.emitTx(ctx, tx, event, payload)
	})
}

// TrustEvents is the trust store's event sink: identity.rotated starts the
// flows that listen for it, in the rotation's transaction.
func (e *Engine) TrustEvents() truststore.EventSink {
	return func(ctx context.Context, tx *store.Tx, event string, payload map[string]any) error {
		return e.emitTx(ctx, tx, event, payload)
	}
}
