package flow

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// digestOf returns the hex SHA-256 of the canonical JSON encoding of a
// document's data: keys sorted, no insignificant whitespace, no HTML
// escaping, numbers as encoding/json writes int64 and float64 values.
func digestOf(tree any) (string, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(tree); err != nil {
		return "", fmt.Errorf("flow: encode document for its digest: %w", err)
	}
	sum := sha256.Sum256(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
	return hex.EncodeToString(sum[:]), nil
}
