package flow

import (
	"context"
	"testing"
)

func BenchmarkParse(b *testing.B) {
	src := readFixture(b, "valid/offboard-user.yaml")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("offboard-user.yaml", src); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEvalPath(b *testing.B) {
	d, err := Parse("offboard-user.yaml", readFixture(b, "valid/offboard-user.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	path := d.Step("remove").Call.Path
	s := Scope{Input: map[string]any{"user_id": "u-42"}, Vars: map[string]any{"group": "admins", "index": int64(0)}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		v, err := path.Eval(ctx, s)
		if err != nil || v != "/groups/admins/members/u-42" {
			b.Fatal(v, err)
		}
	}
}

func BenchmarkEvalBool(b *testing.B) {
	d, err := Parse("offboard-user.yaml", readFixture(b, "valid/offboard-user.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	guard := d.Step("decide").If
	s := Scope{Steps: map[string]any{"lookup": map[string]any{"status": 200, "body": map[string]any{"active": true}}}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		ok, err := guard.EvalBool(ctx, s)
		if err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}
