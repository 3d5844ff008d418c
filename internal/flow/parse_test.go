package flow

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/trustflow/trustflow/internal/errs"
)

// readFixture returns a testdata file.
func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	return data
}

// mustParse parses a document that must be valid.
func mustParse(t testing.TB, src string) *Document {
	t.Helper()
	d, err := Parse("test.yaml", []byte(src))
	require.NoError(t, err)
	return d
}

// problemsOf parses a document that must be invalid and returns its
// problems.
func problemsOf(t testing.TB, name string, data []byte) []Problem {
	t.Helper()
	d, err := Parse(name, data)
	require.Nil(t, d)
	var verr *errs.Error
	require.ErrorAs(t, err, &verr)
	require.NotEmpty(t, verr.Problems)
	return verr.Problems
}

func TestParseExampleFlow(t *testing.T) {
	t.Parallel()
	src := readFixture(t, "valid/offboard-user.yaml")
	d, err := Parse("offboard-user.yaml", src)
	require.NoError(t, err)

	require.Equal(t, "trustflow/v1", d.APIVersion)
	require.Equal(t, "Flow", d.Kind)
	require.Equal(t, "offboard-user", d.Name)
	require.Equal(t, "Disable a departed user in the legacy directory", d.Description)
	require.Equal(t, Trigger{Kind: TriggerManual}, d.Trigger)
	require.True(t, d.InputDeclared)
	require.Equal(t, []Input{{Name: "user_id", Type: TypeString, Required: true}}, d.Inputs)
	require.Equal(t, Settings{}, d.Settings)
	require.Equal(t, src, d.Source)
	require.Len(t, d.Digest, 64)

	require.Len(t, d.Steps, 4)
	lookup := d.Steps[0]
	require.Equal(t, "lookup", lookup.ID)
	require.Equal(t, KindCall, lookup.Kind)
	require.Equal(t, [2]int{9, 5}, [2]int{lookup.Line, lookup.Column})
	require.Nil(t, lookup.If)
	require.Equal(t, Retry{MaxAttempts: 5, InitialBackoff: time.Second, MaxBackoff: time.Minute, Multiplier: 2}, lookup.Retry)
	require.Equal(t, 30*time.Second, lookup.Timeout)
	require.Equal(t, "hr", lookup.Call.Connector)
	require.Equal(t, "GET", lookup.Call.Method)
	require.Equal(t, int64(DefaultMaxResponseBytes), lookup.Call.MaxResponseBytes)
	require.Empty(t, lookup.Call.Expect)
	require.Nil(t, lookup.Call.Body)
	require.Nil(t, lookup.Call.Query)
	accept, ok := lookup.Call.Headers["Accept"].Literal()
	require.True(t, ok)
	require.Equal(t, "application/json", accept)

	decide := d.Steps[1]
	require.Equal(t, KindIf, decide.Kind)
	require.Equal(t, "steps.lookup.status == 200 && steps.lookup.body.active", decide.If.Source)
	require.Equal(t, [2]int{14, 9}, [2]int{decide.If.Line, decide.If.Column})
	require.Len(t, decide.Then, 1)
	require.Equal(t, "disable", decide.Then[0].ID)
	require.Len(t, decide.Else, 1)
	require.Equal(t, KindSet, decide.Else[0].Kind)
	require.Equal(t, []string{"skipped"}, decide.Else[0].SetKeys)

	groups := d.Steps[2]
	require.Equal(t, KindForeach, groups.Kind)
	require.Equal(t, "group", groups.As)
	require.Equal(t, 4, groups.Concurrency)
	require.Len(t, groups.Body, 1)
	require.Equal(t, "DELETE", groups.Body[0].Call.Method)

	pause := d.Steps[3]
	require.Equal(t, KindSleep, pause.Kind)
	require.Equal(t, 10*time.Minute, pause.SleepFor)
	require.Nil(t, pause.SleepUntil)

	require.NotNil(t, d.Output)
	require.Len(t, d.OnError, 1)
	require.Equal(t, "alert", d.OnError[0].ID)

	require.Equal(t, []string{"directory", "hr", "ticketing"}, d.Connectors())
	require.Empty(t, d.SubFlows())
	var paths []string
	require.NoError(t, d.Walk(func(path string, s *Step) error {
		paths = append(paths, path+"="+s.Kind)
		return nil
	}))
	require.Equal(t, []string{
		"lookup=call", "decide=if", "decide.disable=call", "decide.note=set",
		"groups=foreach", "groups.remove=call", "pause=sleep", "alert=call",
	}, paths)
}

func TestParseValidFixtures(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/valid/*")
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), 5)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			d, err := Parse(filepath.Base(f), readFixture(t, strings.TrimPrefix(f, "testdata/")))
			require.NoError(t, err)
			require.Len(t, d.Digest, 64)
		})
	}
}

func TestParseRotateExpiring(t *testing.T) {
	t.Parallel()
	d, err := Parse("rotate-expiring.yaml", readFixture(t, "valid/rotate-expiring.yaml"))
	require.NoError(t, err)
	require.Equal(t, Trigger{Kind: TriggerEvent, EventType: "identity.expiring"}, d.Trigger)
	require.Equal(t, Settings{Concurrency: 1, Timeout: 7 * 24 * time.Hour, Durability: DurabilityDurable}, d.Settings)
	require.Equal(t, []Input{
		{Name: "identity", Type: TypeString, Required: true, Description: "The identity's name"},
		{Name: "days_left", Type: TypeInteger, Default: int64(30), HasDefault: true},
		{Name: "parties", Type: TypeArray, Default: []any{"billing", "payroll"}, HasDefault: true},
		{Name: "dry_run", Type: TypeBoolean, Default: false, HasDefault: true},
		{Name: "api_token", Type: TypeString, Secret: true},
		{Name: "weights", Type: TypeObject, Default: map[string]any{"a": 1.5}, HasDefault: true},
		{Name: "ratio", Type: TypeNumber, Default: 0.5, HasDefault: true},
	}, d.Inputs)

	classify := d.Steps[0]
	require.Equal(t, KindSwitch, classify.Kind)
	require.Len(t, classify.Cases, 2)
	require.Equal(t, "input.days_left <= 14", classify.Cases[1].When.Source)
	require.Empty(t, classify.Cases[1].Steps)
	require.True(t, classify.HasDefault)
	require.Equal(t, "relaxed", classify.Default[0].ID)

	request := d.Step("request")
	require.Equal(t, "POST", request.Call.Method)
	require.Equal(t, []int{200, 201, 202}, request.Call.Expect)
	require.Equal(t, int64(1<<20), request.Call.MaxResponseBytes)
	require.Equal(t, Retry{MaxAttempts: 3, InitialBackoff: 500 * time.Millisecond, MaxBackoff: time.Minute, Multiplier: 1.5}, request.Retry)
	require.Equal(t, time.Minute, request.Timeout)
	require.True(t, request.ContinueOnError)
	require.NotNil(t, request.If)

	require.NotNil(t, d.Step("wait").SleepUntil)
	until, ok := d.Step("later").SleepUntil.Literal()
	require.True(t, ok)
	require.Equal(t, "2030-01-01T09:00:00Z", until)

	tell := d.Step("tell")
	require.Equal(t, KindFlowRun, tell.Kind)
	require.Equal(t, "notify-party", tell.SubFlow)
	require.Equal(t, []string{"notify-party"}, d.SubFlows())
	require.Equal(t, []string{"ca.issuer"}, d.Connectors())

	giveUp := d.Step("give_up")
	require.Equal(t, KindFail, giveUp.Kind)
	require.Nil(t, giveUp.FailCode)
	page := d.Step("page")
	require.NotNil(t, page.FailCode)
	code, ok := page.FailCode.Literal()
	require.True(t, ok)
	require.Equal(t, "rotation_failed", code)

	var paths []string
	require.NoError(t, d.Walk(func(path string, _ *Step) error {
		paths = append(paths, path)
		return nil
	}))
	require.Equal(t, []string{
		"classify", "classify.urgent", "classify.relaxed", "request", "wait", "later",
		"notify", "notify.per_party", "notify.per_party.tell", "notify.check", "notify.check.give_up",
		"record", "page",
	}, paths)
	stop := errors.New("stop")
	n := 0
	require.ErrorIs(t, d.Walk(func(string, *Step) error { n++; return stop }), stop)
	require.Equal(t, 1, n)
	require.Nil(t, d.Step("nope"))
}

func TestParseUntypedInput(t *testing.T) {
	t.Parallel()
	d, err := Parse("webhook-sync.json", readFixture(t, "valid/webhook-sync.json"))
	require.NoError(t, err)
	require.False(t, d.InputDeclared)
	require.Equal(t, Trigger{Kind: TriggerWebhook, WebhookAuth: WebhookHMAC}, d.Trigger)
	require.Equal(t, "PUT", d.Steps[0].Call.Method)

	d, err = Parse("nightly-report.yaml", readFixture(t, "valid/nightly-report.yaml"))
	require.NoError(t, err)
	require.True(t, d.InputDeclared)
	require.Empty(t, d.Inputs)
	require.Equal(t, Trigger{Kind: TriggerSchedule, Cron: "30 2 * * 1-5", Timezone: "Europe/Paris"}, d.Trigger)
}

func TestParseTriggerDefaults(t *testing.T) {
	t.Parallel()
	for src, want := range map[string]Trigger{
		"{manual: }":                        {Kind: TriggerManual},
		"{webhook: {}}":                     {Kind: TriggerWebhook, WebhookAuth: WebhookToken},
		"{webhook: }":                       {Kind: TriggerWebhook, WebhookAuth: WebhookToken},
		"{schedule: {cron: '@daily'}}":      {Kind: TriggerSchedule, Cron: "@daily", Timezone: "UTC"},
		"{schedule: {cron: '*/5 * * * *'}}": {Kind: TriggerSchedule, Cron: "*/5 * * * *", Timezone: "UTC"},
		"{event: {type: identity.rotated}}": {Kind: TriggerEvent, EventType: "identity.rotated"},
		"{schedule: {cron: '0 9 * * *', timezone: America/New_York}}": {Kind: TriggerSchedule, Cron: "0 9 * * *", Timezone: "America/New_York"},
	} {
		d := mustParse(t, "apiVersion: trustflow/v1\nkind: Flow\nname: t\ntrigger: "+src+"\nsteps: [{id: a, set: {}}]\n")
		require.Equal(t, want, d.Trigger, src)
	}
}

// want is an expected problem: position, path and message.
type want struct {
	line, col     int
	path, message string
}

func TestParseInvalid(t *testing.T) {
	t.Parallel()
	cases := []struct {
		fixture string
		want    []want
	}{
		{"api-version-missing", []want{{1, 1, "apiVersion", "`apiVersion` is required"}}},
		{"api-version", []want{{1, 13, "apiVersion", "unsupported apiVersion \"trustflow/v2\""}}},
		{"body-nested-ref", []want{{12, 24, "steps[0].call.body.users[0].login", "there is no step `missing` in this flow"}}},
		{"cel-error-outside-on-error", []want{{7, 17, "steps[0].set.x", "undeclared reference to 'error'"}}},
		{"cel-index-outside-foreach", []want{{7, 17, "steps[0].set.x", "undeclared reference to 'index' (did you mean 'indexOf'?)"}}},
		{"cel-run-field", []want{{7, 20, "steps[0].set.x", "undefined field 'started'"}}},
		{"cel-syntax-block", []want{{11, 11, "steps[0].set.x", "Syntax error: the expression ends too early"}}},
		{"cel-syntax", []want{{7, 21, "steps[0].set.x", "Syntax error: extraneous input '*'"}}},
		{"cel-type", []want{{9, 25, "steps[0].set.x", "found no matching overload for '_+_' applied to '(int, string)'"}}},
		{"cel-undefined-input", []want{{9, 29, "steps[0].set.x", "undefined field 'usr_id'"}}},
		{"condition-list", []want{{7, 9, "steps[0].if", "must be a condition, not a list"}}},
		{"condition-not-bool", []want{{9, 9, "steps[0].if", "a condition must be true or false; this expression gives a string"}}},
		{"condition-text", []want{{7, 9, "steps[0].if", "a condition is one expression, not text around ${...}"}}},
		{"connector-missing", []want{{7, 5, "steps[0].call.connector", "`connector` is required"}}},
		{"connector-name", []want{{7, 23, "steps[0].call.connector", "\"${input.c}\" is not a valid connector name"}}},
		{"cron-missing", []want{{5, 3, "trigger.schedule.cron", "`cron` is required"}}},
		{"cron-timezone-prefix", []want{{5, 20, "trigger.schedule.cron", "a cron expression must not carry a time zone"}}},
		{"cron", []want{{5, 20, "trigger.schedule.cron", "invalid cron expression \"0 6 * *\": expected exactly 5 fields, found 4: [0 6 * *]"}}},
		{"cron-every-too-often", []want{{5, 20, "trigger.schedule.cron", "a schedule fires at most once a second, in whole seconds; @every 1ns is not"}}},
		{"limits", []want{
			{6, 18, "limits.subflow_depth", "subflow_depth 0 is out of range"},
			{7, 18, "limits.foreach_items", "must be an integer, not a number (\"1.5\")"},
			{8, 22, "limits.step_output_bytes", "must be an integer, not a string (\"1MiB\")"},
			{9, 3, "limits.runs_in_flite", "unknown key `runs_in_flite`"},
		}},
		{"duration-invalid", []want{{8, 14, "steps[0].timeout", "\"soon\" is not a duration"}}},
		{"duration-negative", []want{{8, 14, "steps[0].timeout", "duration \"-5s\" is negative"}}},
		{"duration-no-unit", []want{{8, 14, "steps[0].timeout", "duration 30 has no unit"}}},
		{"empty", []want{{0, 0, "", "the document is empty"}}},
		{"event-type", []want{{4, 25, "trigger.event.type", "\"IdentityExpiring\" is not an event type"}}},
		{"expect-not-list", []want{{7, 45, "steps[0].call.expect", "must be a non-empty list of statuses"}}},
		{"expect-range", []want{{7, 51, "steps[0].call.expect[1]", "600 is not an HTTP status"}}},
		{"expr-empty", []want{{7, 17, "steps[0].set.x", "empty expression"}}},
		{"expr-unclosed", []want{{7, 22, "steps[0].set.x", "`${` is not closed"}}},
		{"fail-no-message", []want{{7, 5, "steps[0].fail.message", "`message` is required"}}},
		{"foreach-as-reserved", []want{{8, 9, "steps[0].as", "\"input\" is a reserved name"}}},
		{"foreach-concurrency-zero", []want{{8, 18, "steps[0].concurrency", "concurrency 0 is out of range"}}},
		{"foreach-concurrency", []want{{8, 18, "steps[0].concurrency", "concurrency 65 is out of range"}}},
		{"foreach-no-steps", []want{{6, 5, "steps[0].steps", "`steps` is required"}}},
		{"foreach-not-list", []want{{9, 14, "steps[0].foreach", "foreach needs a list; this expression gives a string"}}},
		{"header-duplicate", []want{{12, 9, "steps[0].call.headers.accept", "header accept repeats Accept"}}},
		{"header-name", []want{{7, 47, "steps[0].call.headers.X Bad", "\"X Bad\" is not a valid header name"}}},
		{"header-reserved", []want{{7, 47, "steps[0].call.headers.Host", "header Host cannot be set by a flow"}}},
		{"if-without-then", []want{{7, 5, "steps[0].if", "an if step needs `then:`"}}},
		{"input-default-type", []want{{6, 31, "input.n.default", "default must be an integer, not a string"}}},
		{"input-name", []want{{6, 3, "input.user-id", "\"user-id\" is not a valid input name"}}},
		{"input-required-default", []want{{6, 47, "input.n.default", "a required input cannot have a default"}}},
		{"input-type", []want{{6, 13, "input.n.type", "unknown input type \"int\""}}},
		{"key-expression", []want{{7, 11, "steps[0].set.${input.k}", "keys are not evaluated"}}},
		{"kind", []want{{2, 7, "kind", "unsupported kind \"Workflow\""}}},
		{"max-response-bytes", []want{{7, 57, "steps[0].call.max_response_bytes", "max_response_bytes 0 is out of range"}}},
		{"method-case", []want{{7, 35, "steps[0].call.method", "HTTP methods are case-sensitive: \"post\" is not POST"}}},
		{"method-token", []want{{7, 35, "steps[0].call.method", "\"GET /x\" is not an HTTP method"}}},
		{"misspelt-required", []want{{7, 12, "steps[0].call.conector", "unknown key `conector`"}}},
		{"misplaced-as", []want{{8, 5, "steps[0].as", "`as` belongs to foreach steps"}}},
		{"name", []want{{3, 7, "name", "\"Offboard_User\" is not a valid flow name"}}},
		{"path-dotdot", []want{{7, 33, "steps[0].call.path", "the path climbs out of the connector's base path"}}},
		{"path-host", []want{{7, 33, "steps[0].call.path", "the path must not name a scheme or host"}}},
		{"path-missing", []want{{7, 5, "steps[0].call.path", "`path` is required"}}},
		{"path-number", []want{{7, 33, "steps[0].call.path", "the path must be a string"}}},
		{"path-scheme", []want{{7, 33, "steps[0].call.path", "the path must not name a scheme or host"}}},
		{"retry-attempts", []want{{8, 27, "steps[0].retry.max_attempts", "max_attempts 0 is out of range"}}},
		{"retry-backoff-order", []want{{8, 65, "steps[0].retry.max_backoff", "max_backoff 5s is shorter than initial_backoff 10s"}}},
		{"retry-multiplier", []want{{8, 42, "steps[0].retry.multiplier", "multiplier 0.5 is out of range"}}},
		{"retry-not-integer", []want{{8, 27, "steps[0].retry.max_attempts", "must be an integer, not a string (\"3\")"}}},
		{"retry-on-set", []want{{8, 5, "steps[0].retry", "a set step is not retried"}}},
		{"settings-concurrency", []want{{5, 25, "settings.concurrency", "concurrency -1 is out of range"}}},
		{"settings-durability", []want{{5, 24, "settings.durability", `durability "sometimes" is neither durable nor none`}}},
		{"sleep-expression", []want{{7, 12, "steps[0].sleep", "sleep takes a fixed duration"}}},
		{"sleep-until", []want{{7, 20, "steps[0].sleep.until", "a string (\"tomorrow\") is not a timestamp"}}},
		{"sleep-zero", []want{{7, 12, "steps[0].sleep", "a sleep of 0 does nothing"}}},
		{"step-id-duplicate-nested", []want{{9, 13, "steps[0].then[0].id", "duplicate step id `a` (first at line 6)"}}},
		{"step-id-duplicate-on-error", []want{{9, 9, "on_error[0].id", "duplicate step id `a` (first at line 6)"}}},
		{"step-id-invalid", []want{{6, 9, "steps[0].id", "\"Lookup\" is not a valid step id"}}},
		{"step-id-missing", []want{{6, 5, "steps[0].id", "`id` is required"}}},
		{"step-no-kind", []want{{6, 5, "steps[0]", "the step has no kind"}}},
		{"step-ref-later", []want{{7, 17, "steps[0].set.x", "step `b` runs after this expression"}}},
		{"step-ref-loop-body", []want{{12, 17, "steps[1].set.x", "step `inner` runs inside foreach `loop`; its result is not visible here"}}},
		{"step-ref-on-error", []want{{7, 17, "steps[0].set.x", "step `alert` runs only in on_error, when the run has failed"}}},
		{"step-ref-output-on-error", []want{{8, 12, "output", "step `alert` never runs before the output is computed"}}},
		{"step-ref-self", []want{{7, 11, "steps[0].if", "step `a` has not finished when this expression runs"}}},
		{"step-ref-unknown", []want{{9, 17, "steps[1].set.x", "there is no step `lookpu` in this flow"}}},
		{"step-two-kinds", []want{{8, 5, "steps[0].set", "a step has one kind; this one has call and set"}}},
		{"steps-empty", []want{{5, 8, "steps", "a flow needs at least one step"}}},
		{"steps-missing", []want{{1, 1, "steps", "`steps` is required"}}},
		{"steps-not-list", []want{{5, 8, "steps", "must be a list of steps, not a mapping"}}},
		{"subflow-name", []want{{7, 18, "steps[0].flow.name", "\"Other_Flow\" is not a valid flow name"}}},
		{"subflow-self", []want{{7, 18, "steps[0].flow.name", "a flow cannot run itself"}}},
		{"switch-case-not-bool", []want{{8, 15, "steps[0].switch[0].case", "a condition must be true or false; this expression gives a string"}}},
		{"switch-default-not-last", []want{{8, 9, "steps[0].switch[0].default", "the default must be the last entry"}}},
		{"switch-entry", []want{{8, 9, "steps[0].switch[0]", "a switch entry needs `case:` or `default: true`"}}},
		{"switch-two-defaults", []want{
			{10, 9, "steps[0].switch[1].default", "the default must be the last entry"},
			{12, 9, "steps[0].switch[2].default", "a switch has at most one default"},
		}},
		{"then-without-if", []want{{7, 5, "steps[0].then", "an if step needs `if:`"}}},
		{"timeout-on-set", []want{{8, 5, "steps[0].timeout", "a set step has no timeout"}}},
		{"timezone", []want{{5, 45, "trigger.schedule.timezone", "unknown time zone \"Mars/Olympus_Mons\""}}},
		{"trigger-empty", []want{{4, 1, "trigger", "a trigger needs a kind"}}},
		{"trigger-missing", []want{{1, 1, "trigger", "`trigger` is required"}}},
		{"trigger-string", []want{{4, 10, "trigger", "must be a mapping (key: value), not a string"}}},
		{"trigger-two", []want{{4, 23, "trigger.webhook", "a flow has exactly one trigger; this one has manual and webhook"}}},
		{"trigger-unknown", []want{{4, 11, "trigger.manul", "unknown key `manul`"}}},
		{"two-documents", []want{{7, 1, "", "the file holds more than one YAML document"}}},
		{"unknown-key-call", []want{{7, 37, "steps[0].call.heders", "unknown key `heders`"}}},
		{"unknown-key-root", []want{{6, 1, "outputs", "unknown key `outputs`"}}},
		{"unknown-step-kind", []want{{7, 5, "steps[0].http", "unknown step kind `http`"}}},
		{"webhook-auth", []want{{4, 27, "trigger.webhook.auth", "unknown webhook auth \"hmca\""}}},
		{"yaml-alias", []want{{9, 10, "steps[1].set", "YAML aliases (*s) are not supported"}}},
		{"yaml-duplicate-key", []want{{8, 5, "steps[0].set", "duplicate key `set` (first at line 7)"}}},
		{"yaml-infinity", []want{{7, 14, "steps[0].set.x", ".inf is not a finite number"}}},
		{"yaml-syntax", []want{{7, 0, "", "invalid YAML: did not find expected ',' or ']'"}}},
	}
	files, err := filepath.Glob("testdata/invalid/*.yaml")
	require.NoError(t, err)
	require.Len(t, cases, len(files), "every fixture has a case")
	for _, c := range cases {
		t.Run(c.fixture, func(t *testing.T) {
			t.Parallel()
			name := c.fixture + ".yaml"
			got := problemsOf(t, name, readFixture(t, "invalid/"+name))
			gotWant := make([]want, len(got))
			for i, p := range got {
				gotWant[i] = want{p.Line, p.Column, p.Path, p.Message}
				require.Equal(t, name, p.File)
				require.NotEmpty(t, p.Hint, "every problem says what to write instead")
			}
			require.Equal(t, c.want, gotWant)
		})
	}
}

func TestParseHints(t *testing.T) {
	t.Parallel()
	for fixture, hint := range map[string]string{
		"unknown-key-call":    "did you mean `headers`?",
		"misspelt-required":   "did you mean `connector`?",
		"unknown-key-root":    "did you mean `output`?",
		"trigger-unknown":     "did you mean `manual`?",
		"step-ref-unknown":    "did you mean `lookup`?",
		"cel-undefined-input": "did you mean `user_id`?",
		"input-type":          "use one of: string, number, integer, boolean, object, array",
		"method-case":         "write POST",
		"duration-no-unit":    "write 30s for seconds, or another unit: ms, s, m, h, d",
		"step-ref-loop-body":  "outside the loop, read steps.loop.results[i].inner",
	} {
		got := problemsOf(t, fixture, readFixture(t, "invalid/"+fixture+".yaml"))
		require.Equal(t, hint, got[0].Hint, fixture)
	}
}

func TestValidationErrorFormat(t *testing.T) {
	t.Parallel()
	_, err := Parse("flow.yaml", readFixture(t, "invalid/unknown-key-call.yaml"))
	require.EqualError(t, err, "flow.yaml:7:37: steps[0].call.heders: unknown key `heders` (did you mean `headers`?)")

	_, err = Parse("flow.yaml", readFixture(t, "invalid/switch-two-defaults.yaml"))
	require.EqualError(t, err, "flow.yaml:10:9: steps[0].switch[1].default: the default must be the last entry (move the default entry to the end)\n"+
		"flow.yaml:12:9: steps[0].switch[2].default: a switch has at most one default (keep one default)")

	_, err = Parse("flow.yaml", nil)
	require.EqualError(t, err, "flow.yaml: the document is empty (start with apiVersion: trustflow/v1)")

	require.Equal(t, "input.user_id: required", Problem{Path: "input.user_id", Message: "required"}.String())
	require.Equal(t, "f.yaml:3: x: bad (fix)", Problem{File: "f.yaml", Line: 3, Path: "x", Message: "bad", Hint: "fix"}.String())
}

func TestParseEveryProblemAtOnce(t *testing.T) {
	t.Parallel()
	src := `apiVersion: trustflow/v2
kind: Flow
name: Bad Name
trigger: {manual: {}}
steps:
  - id: a
    call: {connector: hr, method: get, path: "https://x/${steps.zz}"}
  - id: a
    sleep: 10 minutes
`
	got := problemsOf(t, "f.yaml", []byte(src))
	var paths []string
	for _, p := range got {
		paths = append(paths, fmt.Sprintf("%d:%d %s", p.Line, p.Column, p.Path))
	}
	require.Equal(t, []string{
		"1:13 apiVersion",
		"3:7 name",
		"7:35 steps[0].call.method",
		"7:46 steps[0].call.path",
		"7:59 steps[0].call.path",
		"8:9 steps[1].id",
		"9:12 steps[1].sleep",
	}, paths)
}

func TestParseLimits(t *testing.T) {
	t.Parallel()
	const head = "apiVersion: trustflow/v1\nkind: Flow\nname: t\ntrigger: {manual: {}}\n"

	t.Run("document size", func(t *testing.T) {
		t.Parallel()
		src := head + "description: " + strings.Repeat("x", MaxDocumentBytes) + "\nsteps: [{id: a, set: {}}]\n"
		got := problemsOf(t, "big.yaml", []byte(src))
		require.Equal(t, []Problem{{File: "big.yaml", Message: fmt.Sprintf("the document is %d bytes; the limit is 1 MiB (1048576 bytes)", len(src)),
			Hint: "split the flow into sub-flows (kind flow), or move large data out of the document"}}, got)
	})

	t.Run("step count", func(t *testing.T) {
		t.Parallel()
		var b strings.Builder
		b.WriteString(head + "steps:\n")
		for i := range MaxSteps + 1 {
			fmt.Fprintf(&b, "  - {id: s%d, set: {}}\n", i)
		}
		got := problemsOf(t, "many.yaml", []byte(b.String()))
		require.Len(t, got, 1)
		require.Equal(t, want{5 + MaxSteps + 1, 5, "steps[1000]", "the flow has more than 1000 steps"},
			want{got[0].Line, got[0].Column, got[0].Path, got[0].Message})

		// 1,000 steps, nested and on_error ones included, are fine.
		b.Reset()
		b.WriteString(head + "steps:\n  - id: outer\n    if: 'true'\n    then:\n")
		for i := range MaxSteps - 2 {
			fmt.Fprintf(&b, "      - {id: s%d, set: {}}\n", i)
		}
		b.WriteString("on_error: [{id: last, set: {}}]\n")
		_, err := Parse("max.yaml", []byte(b.String()))
		require.NoError(t, err)
	})

	t.Run("nesting depth", func(t *testing.T) {
		t.Parallel()
		nested := func(depth int) string {
			var b strings.Builder
			b.WriteString(head + "steps:\n")
			indent := ""
			for i := 1; i < depth; i++ {
				fmt.Fprintf(&b, "%s  - id: s%d\n%s    if: 'true'\n%s    then:\n", indent, i, indent, indent)
				indent += "    "
			}
			fmt.Fprintf(&b, "%s  - {id: leaf, set: {}}\n", indent)
			return b.String()
		}
		_, err := Parse("deep.yaml", []byte(nested(MaxDepth)))
		require.NoError(t, err)
		got := problemsOf(t, "deep.yaml", []byte(nested(MaxDepth+1)))
		require.Len(t, got, 1)
		require.Equal(t, want{5 + 3*MaxDepth + 1, 3 + 4*MaxDepth, "steps[0]" + strings.Repeat(".then[0]", MaxDepth-1) + ".then",
			"steps are nested deeper than 16 levels"}, want{got[0].Line, got[0].Column, got[0].Path, got[0].Message})
	})

	t.Run("expression count", func(t *testing.T) {
		t.Parallel()
		src := head + "steps: [{id: a, set: {x: [" + strings.Repeat("'${1}', ", MaxExpressions+5) + "]}}]\n"
		got := problemsOf(t, "exprs.yaml", []byte(src))
		require.Equal(t, []want{{5, 28 + 8*MaxExpressions, "steps[0].set.x[10000]", "the flow has more than 10000 expressions or 262144 bytes of them"}},
			[]want{{got[0].Line, got[0].Column, got[0].Path, got[0].Message}})
	})

	// Documents built to make parsing slow still parse within the size
	// limit's budget: nothing is quadratic in the document's size.
	t.Run("hostile documents", func(t *testing.T) {
		t.Parallel()
		if testing.Short() {
			t.Skip("parses several 1 MiB documents")
		}
		var inputs strings.Builder
		inputs.WriteString(head + "input:\n")
		for i := 0; inputs.Len() < MaxDocumentBytes-100; i++ {
			fmt.Fprintf(&inputs, "  i%d: {}\n", i)
		}
		inputs.WriteString("steps: [{id: a, set: {}}]\n")
		var steps strings.Builder
		steps.WriteString(head + "steps:\n")
		for i := 0; steps.Len() < MaxDocumentBytes-100; i++ {
			fmt.Fprintf(&steps, "- {id: s%d, set: {x: '${%d}'}}\n", i, i)
		}
		for name, src := range map[string]string{
			"many inputs":     inputs.String(),
			"many steps":      steps.String(),
			"many references": head + "steps: [{id: a, set: {x: \"" + strings.Repeat("${steps.zz}", (MaxDocumentBytes-200)/11) + "\"}}]\n",
			"long lists":      head + "steps: [{id: a, set: {x: \"" + strings.Repeat("${["+strings.Repeat("1,", 49000)+"1]}", 10) + "\"}}]\n",
		} {
			require.LessOrEqual(t, len(src), MaxDocumentBytes, name)
			start := time.Now()
			_, err := Parse("hostile.yaml", []byte(src))
			require.Less(t, time.Since(start), 20*time.Second, name)
			if name == "many inputs" {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		}
	})

	t.Run("problem count", func(t *testing.T) {
		t.Parallel()
		var b strings.Builder
		b.WriteString(head + "steps:\n")
		for i := range 150 {
			fmt.Fprintf(&b, "  - {id: S%d, set: {}}\n", i)
		}
		got := problemsOf(t, "bad.yaml", []byte(b.String()))
		require.Len(t, got, maxProblems+1)
		require.Equal(t, Problem{File: "bad.yaml", Message: "50 more problems not shown", Hint: "fix the problems above and try again"}, got[maxProblems])
	})
}

func TestParsePositions(t *testing.T) {
	t.Parallel()
	const head = "apiVersion: trustflow/v1\nkind: Flow\nname: t\ntrigger: {manual: {}}\nsteps:\n  - id: a\n    set:\n"
	for _, c := range []struct {
		name, value string
		line, col   int
	}{
		{"plain", `      x: pre ${steps.nope}`, 8, 16},
		{"double-quoted", `      x: "pre ${steps.nope}"`, 8, 17},
		{"single-quoted", `      x: 'it''s ${steps.nope}'`, 8, 19},
		{"escaped quote before", `      x: "a\"b ${steps.nope}"`, 8, 18},
		{"unicode before", `      x: "héllo → ${steps.nope}"`, 8, 21},
		{"literal block", "      x: |\n        line one\n        two ${steps.nope}", 10, 15},
		{"folded plain", "      x: one\n        two ${steps.nope}", 9, 15},
		{"second expression", `      x: "${input} and ${steps.nope}"`, 8, 26},
	} {
		got := problemsOf(t, c.name, []byte(head+c.value+"\n"))
		require.Len(t, got, 1, c.name)
		require.Equal(t, [2]int{c.line, c.col}, [2]int{got[0].Line, got[0].Column}, c.name)
	}
}
