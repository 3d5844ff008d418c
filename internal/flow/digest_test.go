package flow

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const digestBase = `apiVersion: trustflow/v1
kind: Flow
name: digest
trigger: {manual: {}}
input:
  user_id: {type: string, required: true}
steps:
  - id: lookup
    call: {connector: hr, path: "/users/${input.user_id}", expect: [200, 404]}
    retry: {max_attempts: 3}
`

func TestDigestIgnoresPresentation(t *testing.T) {
	t.Parallel()
	base := mustParse(t, digestBase).Digest
	for name, src := range map[string]string{
		"comments and blank lines": "# a flow\n" + strings.Replace(digestBase, "steps:\n", "\n# the steps\nsteps:   # inline\n\n", 1),
		"key order": `kind: Flow
steps:
  - retry: {max_attempts: 3}
    call: {path: "/users/${input.user_id}", expect: [200, 404], connector: hr}
    id: lookup
input:
  user_id: {required: true, type: string}
trigger: {manual: {}}
name: digest
apiVersion: trustflow/v1
`,
		"block style and quoting": `apiVersion: "trustflow/v1"
kind: 'Flow'
name: digest
trigger:
  manual: {}
input:
  user_id:
    type: string
    required: true
steps:
- id: lookup
  call:
    connector: "hr"
    path: /users/${input.user_id}
    expect:
      - 200
      - 0x194
  retry:
    max_attempts: 3
`,
		"JSON": `{"apiVersion": "trustflow/v1", "kind": "Flow", "name": "digest", "trigger": {"manual": {}},
  "input": {"user_id": {"type": "string", "required": true}},
  "steps": [{"id": "lookup", "call": {"connector": "hr", "path": "/users/${input.user_id}", "expect": [200, 404]}, "retry": {"max_attempts": 3}}]}`,
	} {
		require.Equal(t, base, mustParse(t, src).Digest, name)
	}
}

func TestDigestChangesWithContent(t *testing.T) {
	t.Parallel()
	base := mustParse(t, digestBase).Digest
	seen := map[string]string{base: "base"}
	for name, edit := range map[string][2]string{
		"connector":          {"connector: hr", "connector: hr2"},
		"expression":         {"${input.user_id}", "${input.user_id.lowerAscii()}"},
		"number":             {"max_attempts: 3", "max_attempts: 4"},
		"timeout added":      {"retry: {max_attempts: 3}", "retry: {max_attempts: 3}\n    timeout: 3s"},
		"list order":         {"[200, 404]", "[404, 200]"},
		"explicit default":   {"retry: {max_attempts: 3}", "retry: {max_attempts: 3, multiplier: 2}"},
		"description added":  {"kind: Flow\n", "kind: Flow\ndescription: x\n"},
		"escaped expression": {"/users/${input.user_id}", "/users/$${input.user_id}"},
	} {
		src := strings.Replace(digestBase, edit[0], edit[1], 1)
		require.NotEqual(t, digestBase, src, name)
		d, err := Parse("edit.yaml", []byte(src))
		require.NoError(t, err, name)
		prev, dup := seen[d.Digest]
		require.False(t, dup, "%s has the digest of %s", name, prev)
		seen[d.Digest] = name
	}
}
