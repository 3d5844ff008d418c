package store

import (
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// SealedColumn is one column of the schema that holds sealed blobs (see
// package seal), with the column naming each blob's key-encryption key and
// the additional data each blob is bound to. [SealedColumns] lists every one;
// a key rotation re-wraps exactly these, and the startup check counts them.
// A new sealed column joins the list, or the test that enumerates every
// sealed blob in the database fails.
type SealedColumn struct {
	// Name says what the values are, for progress and errors: "identity key".
	Name string
	// Table and Column locate the blobs; KEKColumn holds each blob's KEK id,
	// "" for a row with nothing sealed.
	Table, Column, KEKColumn string
	// Key is the table's primary key, in order.
	Key []string
	// Text means the column is text holding TextPrefix and the blob in
	// standard base64 (a step state holds clear JSON or a sealed blob).
	Text bool
	// AAD returns the additional data a row's blob is sealed with, from its
	// key values in Key's order.
	AAD func(key []any) []byte
}

// TextPrefix starts a sealed value kept in a text column.
const TextPrefix = "sealed:"

// The additional data of each kind of sealed value. Sealing and opening code
// calls these, so that the registry and the code that seals agree.

// IdentityKeyAAD binds an identity version's private key to its row.
func IdentityKeyAAD(identityID string, version int) []byte {
	return fmt.Appendf(nil, "trustflow/identity/%s/v%d", identityID, version)
}

// ConnectorSecretAAD binds a connector's secret to the connector.
func ConnectorSecretAAD(connectorID string) []byte {
	return []byte("trustflow/connector/" + connectorID)
}

// WebhookSecretAAD binds a flow's webhook HMAC secret to the flow.
func WebhookSecretAAD(flow string) []byte { return []byte("trustflow/flow/" + flow + "/webhook") }

// WebhookPreviousSecretAAD binds the webhook secret a rotation replaced
// (valid until its overlap ends) to the flow.
func WebhookPreviousSecretAAD(flow string) []byte {
	return []byte("trustflow/flow/" + flow + "/webhook/previous")
}

// RunInputAAD binds a run's whole input to the run.
func RunInputAAD(runID string) []byte { return []byte("trustflow/run/" + runID + "/input") }

// StepStateAAD binds a sealed step state to its run and step path.
func StepStateAAD(runID, path string) []byte {
	return []byte("trustflow/run/" + runID + "/state/" + path)
}

// sealedColumns is the registry: every sealed column of the schema.
var sealedColumns = []SealedColumn{
	{Name: "identity key", Table: "identity_versions", Column: "sealed_key", KEKColumn: "kek_id", Key: []string{"identity_id", "version"},
		AAD: func(k []any) []byte { return IdentityKeyAAD(asString(k[0]), int(asInt(k[1]))) }},
	{Name: "connector secret", Table: "connectors", Column: "sealed_secret", KEKColumn: "kek_id", Key: []string{"id"},
		AAD: func(k []any) []byte { return ConnectorSecretAAD(asString(k[0])) }},
	{Name: "webhook secret", Table: "flows", Column: "webhook_secret", KEKColumn: "kek_id", Key: []string{"name"},
		AAD: func(k []any) []byte { return WebhookSecretAAD(asString(k[0])) }},
	{Name: "previous webhook secret", Table: "flows", Column: "webhook_secret_previous", KEKColumn: "webhook_secret_previous_kek_id", Key: []string{"name"},
		AAD: func(k []any) []byte { return WebhookPreviousSecretAAD(asString(k[0])) }},
	{Name: "run input", Table: "runs", Column: "input_sealed", KEKColumn: "kek_id", Key: []string{"id"},
		AAD: func(k []any) []byte { return RunInputAAD(asString(k[0])) }},
	{Name: "step state", Table: "run_steps", Column: "state", KEKColumn: "state_kek_id", Key: []string{"run_id", "path"}, Text: true,
		AAD: func(k []any) []byte { return StepStateAAD(asString(k[0]), asString(k[1])) }},
}

// SealedColumns returns the registry of sealed columns.
func SealedColumns() []SealedColumn { return append([]SealedColumn(nil), sealedColumns...) }

// String names the column as table.column.
func (c SealedColumn) String() string { return c.Table + "." + c.Column }

// SealedBlob is one sealed value as stored.
type SealedBlob struct {
	// Key holds the row's primary key values, in the column's Key order.
	Key []any
	// Blob is the sealed blob (decoded, for a text column).
	Blob []byte
	// KEKID is the stored KEK id of the blob.
	KEKID string
	// stored is the column's value as read, for the compare-and-swap.
	stored any
}

// EncodeSealedText returns a blob as a text column stores it.
func EncodeSealedText(blob []byte) string {
	return TextPrefix + base64.StdEncoding.EncodeToString(blob)
}

// DecodeSealedText returns the blob inside a text column's value, and
// whether the value is sealed at all.
func DecodeSealedText(v string) ([]byte, bool, error) {
	enc, ok := strings.CutPrefix(v, TextPrefix)
	if !ok {
		return nil, false, nil
	}
	blob, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return nil, true, fmt.Errorf("store: sealed text value: %w", err)
	}
	return blob, true, nil
}

// SealedKEKCounts counts the sealed values of each column by KEK id:
// result[column][kekID] = n.
func (s *Store) SealedKEKCounts(ctx context.Context) (map[string]map[string]int, error) {
	out := map[string]map[string]int{}
	for _, c := range sealedColumns {
		q := fmt.Sprintf("SELECT %s, COUNT(*) FROM %s WHERE %s <> '' GROUP BY %s", c.KEKColumn, c.Table, c.KEKColumn, c.KEKColumn)
		rows, err := s.read.QueryContext(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("store: count sealed %ss: %w", c.Name, err)
		}
		m := map[string]int{}
		for rows.Next() {
			var id string
			var n int
			if err := rows.Scan(&id, &n); err != nil {
				rows.Close()
				return nil, fmt.Errorf("store: count sealed %ss: %w", c.Name, err)
			}
			m[id] = n
		}
		if err := rows.Close(); err != nil {
			return nil, fmt.Errorf("store: count sealed %ss: %w", c.Name, err)
		}
		out[c.String()] = m
	}
	return out, nil
}

// SealedPage returns up to limit sealed values of column c whose KEK id is
// not skipKEK (every value, if skipKEK is ""), in key order after the key
// after (from the start when nil). It reads through the transaction when tx
// is not nil.
func (s *Store) SealedPage(ctx context.Context, tx *Tx, c SealedColumn, skipKEK string, after []any, limit int) ([]SealedBlob, error) {
	keys := strings.Join(c.Key, ", ")
	q := fmt.Sprintf("SELECT %s, %s, %s FROM %s WHERE %s <> '' AND %s <> $1", keys, c.Column, c.KEKColumn, c.Table, c.KEKColumn, c.KEKColumn)
	args := []any{skipKEK}
	if after != nil {
		ph := make([]string, len(after))
		for i, v := range after {
			args = append(args, v)
			ph[i] = fmt.Sprintf("$%d", len(args))
		}
		q += fmt.Sprintf(" AND (%s) > (%s)", keys, strings.Join(ph, ", "))
	}
	args = append(args, limit)
	q += fmt.Sprintf(" ORDER BY %s LIMIT $%d", keys, len(args))
	var rows *sql.Rows
	var err error
	if tx != nil {
		rows, err = tx.tx.QueryContext(ctx, q, args...)
	} else {
		rows, err = s.read.QueryContext(ctx, q, args...)
	}
	if err != nil {
		return nil, fmt.Errorf("store: read sealed %ss: %w", c.Name, err)
	}
	defer rows.Close()
	var out []SealedBlob
	for rows.Next() {
		key := make([]any, len(c.Key))
		dest := make([]any, 0, len(c.Key)+2)
		for i := range key {
			dest = append(dest, &key[i])
		}
		var value any
		var b SealedBlob
		dest = append(dest, &value, &b.KEKID)
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("store: read sealed %ss: %w", c.Name, err)
		}
		for i, k := range key {
			if raw, ok := k.([]byte); ok { // some drivers return text as bytes
				key[i] = string(raw)
			}
		}
		b.Key, b.stored = key, value
		if b.Blob, err = sealedBytes(c, value); err != nil {
			return nil, fmt.Errorf("store: sealed %s %v: %w", c.Name, key, err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: read sealed %ss: %w", c.Name, err)
	}
	return out, nil
}

// sealedBytes returns the blob in a stored value of column c.
func sealedBytes(c SealedColumn, v any) ([]byte, error) {
	var raw []byte
	switch t := v.(type) {
	case []byte:
		raw = t
	case string:
		raw = []byte(t)
	case nil:
		return nil, fmt.Errorf("%s names a key-encryption key but holds no value", c)
	default:
		return nil, fmt.Errorf("%s holds a %T", c, v)
	}
	if !c.Text {
		return raw, nil
	}
	blob, ok, err := DecodeSealedText(string(raw))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%s names a key-encryption key but does not start with %q", c, TextPrefix)
	}
	return blob, nil
}

// ReplaceSealed stores blob, wrapped by kekID, in place of b, only if the row
// still holds exactly the value b was read with; it reports whether it did.
// A row changed since (a secret replaced, a step checkpointed again) is left
// alone: its new value was sealed under the current KEK anyway.
func (t *Tx) ReplaceSealed(ctx context.Context, c SealedColumn, b SealedBlob, blob []byte, kekID string) (bool, error) {
	var value any = blob
	old := b.stored
	if c.Text {
		value = EncodeSealedText(blob)
		if raw, ok := old.([]byte); ok {
			old = string(raw)
		}
	}
	args := []any{value, kekID}
	where := make([]string, 0, len(c.Key)+2)
	for i, k := range c.Key {
		args = append(args, b.Key[i])
		where = append(where, fmt.Sprintf("%s = $%d", k, len(args)))
	}
	args = append(args, b.KEKID)
	where = append(where, fmt.Sprintf("%s = $%d", c.KEKColumn, len(args)))
	args = append(args, old)
	where = append(where, fmt.Sprintf("%s = $%d", c.Column, len(args)))
	q := fmt.Sprintf("UPDATE %s SET %s = $1, %s = $2 WHERE %s", c.Table, c.Column, c.KEKColumn, strings.Join(where, " AND "))
	res, err := t.tx.ExecContext(ctx, q, args...)
	if err != nil {
		return false, fmt.Errorf("store: replace sealed %s %v: %w", c.Name, b.Key, mapErr(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: replace sealed %s %v: %w", c.Name, b.Key, err)
	}
	return n == 1, nil
}

func asString(v any) string {
	switch t := v.(type) {
	case string:
		return t
	case []byte:
		return string(t)
	default:
		return fmt.Sprint(v)
	}
}

func asInt(v any) int64 {
	switch t := v.(type) {
	case int64:
		return t
	case int32:
		return int64(t)
	case int:
		return int64(t)
	default:
		// Integer keys scan as int64 on both drivers; anything else cannot
		// name a row, and -1 makes the aad (and so the open) fail.
		n, err := strconv.ParseInt(asString(v), 10, 64)
		if err != nil {
			return -1
		}
		return n
	}
}
