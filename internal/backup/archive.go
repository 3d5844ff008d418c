package backup

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"time"

	"github.com/trustflow/trustflow/internal/errs"
)

// The backup file format: an uncompressed POSIX tar archive whose first
// member is the manifest, followed by exactly the members it lists, in
// its order, and nothing else.
const (
	// Format is the manifest's "format" value.
	Format = "trustflow-backup"
	// FormatVersion is the version this binary writes and the newest it
	// reads.
	FormatVersion = 1
	// ManifestName is the first member.
	ManifestName = "manifest.json"
	// DatabaseName is the SQLite database, as VACUUM INTO wrote it.
	DatabaseName = "trustflow.db"
	// KEKName holds the key-encryption keys encrypted under the
	// passphrase; present only in a backup made with --include-kek.
	KEKName = "kek.enc"
)

// Bounds on what a reader accepts before it looks further.
const (
	maxManifestSize = 64 << 10
	maxKEKSize      = 16 << 10
	// maxDatabaseSize is far above any real database: it only keeps a
	// hostile size field from meaning "read forever".
	maxDatabaseSize = 1 << 40
	// maxKEKIDs bounds the KEK ids a manifest may list.
	maxKEKIDs = 64
)

// ErrCorrupt matches every error saying the file is not a trustflow
// backup or is damaged: truncated, altered, or missing a member. Each says
// what is wrong.
var ErrCorrupt error = errs.E(errs.Invalid, "backup_damaged", "the file is not a trustflow backup, or it is damaged", hintCorrupt)

// ErrNewerFormat matches the error for a file written by a newer
// trustflow, in a format version this binary does not read.
var ErrNewerFormat error = errs.E(errs.Invalid, "backup_format_newer", "the file is in a newer backup format", "")

const hintCorrupt = "compare the file's sha256 with the one backup printed, and restore another copy or another backup"

// corrupt is an ErrCorrupt saying what is wrong.
func corrupt(format string, args ...any) error {
	return &errs.Error{Kind: errs.Invalid, Code: "backup_damaged", Op: "backup: read",
		Message: "the file is not a trustflow backup, or it is damaged: " + fmt.Sprintf(format, args...), Hint: hintCorrupt}
}

// Manifest describes a backup: what made it, what it holds, and which
// key-encryption keys a restore needs. It is the archive's first member.
type Manifest struct {
	Format           string    `json:"format"`
	FormatVersion    int       `json:"format_version"`
	TrustflowVersion string    `json:"trustflow_version"`
	TrustflowCommit  string    `json:"trustflow_commit,omitempty"`
	CreatedAt        time.Time `json:"created_at"`
	// Dialect is the database engine: "sqlite".
	Dialect string `json:"dialect"`
	// SchemaVersion is the newest migration applied to the database.
	SchemaVersion int `json:"schema_version"`
	// ActiveKEK is the key-encryption key the database names as active
	// ("" for a database that records none).
	ActiveKEK string `json:"active_kek_id"`
	// KEKIDs lists every key-encryption key a restore needs: the active one
	// and each one a sealed value in the database names, sorted.
	KEKIDs []string `json:"kek_ids"`
	// KEKSource is where the backed-up installation kept its keys (a
	// file:// path, env:// name or pkcs11: URI; never a secret).
	KEKSource string `json:"kek_source"`
	// AuditKeyID is the audit key the database's audit chain is keyed
	// under ("" for a chain without one); a restore needs it too.
	AuditKeyID string `json:"audit_key_id,omitempty"`
	// AuditKeySource is where the backed-up installation kept it.
	AuditKeySource string `json:"audit_key_source,omitempty"`
	// KEKIncluded reports whether the KEKs (and the audit key, when
	// AuditKeyIncluded) are in the backup, encrypted under a passphrase as
	// KEK says.
	KEKIncluded      bool           `json:"kek_included"`
	AuditKeyIncluded bool           `json:"audit_key_included,omitempty"`
	KEK              *KEKEncryption `json:"kek,omitempty"`
	// Members lists the archive's members after the manifest, in order.
	Members []Member `json:"members"`
}

// Member is one archive member after the manifest, with its checksum.
type Member struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Member returns the member called name, or false.
func (m *Manifest) Member(name string) (Member, bool) {
	for _, mem := range m.Members {
		if mem.Name == name {
			return mem, true
		}
	}
	return Member{}, false
}

var (
	kekIDForm  = regexp.MustCompile(`^[0-9a-f]{16}$`)
	sha256Form = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// validate checks everything a reader relies on. Its errors wrap
// ErrCorrupt or ErrNewerFormat.
func (m *Manifest) validate() error {
	if m.Format != Format {
		return corrupt("%s does not say format %q", ManifestName, Format)
	}
	if m.FormatVersion > FormatVersion {
		made := m.TrustflowVersion
		if made == "" {
			made = "a newer version"
		}
		return &errs.Error{Kind: errs.Invalid, Code: "backup_format_newer", Op: "backup: read",
			Message: fmt.Sprintf("the file is in a newer backup format: it is format version %d and this trustflow reads version %d", m.FormatVersion, FormatVersion),
			Hint:    fmt.Sprintf("restore it with trustflow %s or newer", made)}
	}
	if m.FormatVersion < 1 {
		return corrupt("format_version %d is not a version", m.FormatVersion)
	}
	if m.Dialect != "sqlite" {
		return corrupt("dialect %q: this trustflow restores only SQLite backups (PostgreSQL is backed up with pg_dump)", m.Dialect)
	}
	if m.SchemaVersion < 1 {
		return corrupt("schema_version %d is not a version", m.SchemaVersion)
	}
	if m.CreatedAt.IsZero() {
		return corrupt("created_at is missing")
	}
	if m.ActiveKEK != "" && !kekIDForm.MatchString(m.ActiveKEK) {
		return corrupt("active_kek_id is not a key-encryption key id (16 hex digits)")
	}
	if len(m.KEKIDs) > maxKEKIDs {
		return corrupt("kek_ids lists %d keys, more than %d", len(m.KEKIDs), maxKEKIDs)
	}
	for i, id := range m.KEKIDs {
		if !kekIDForm.MatchString(id) {
			return corrupt("kek_ids[%d] is not a key-encryption key id (16 hex digits)", i)
		}
		if i > 0 && m.KEKIDs[i-1] >= id {
			return corrupt("kek_ids must be sorted and distinct")
		}
	}
	if m.ActiveKEK != "" && !slices.Contains(m.KEKIDs, m.ActiveKEK) {
		return corrupt("kek_ids does not list the active key %s", m.ActiveKEK)
	}
	if m.AuditKeyID != "" && !kekIDForm.MatchString(m.AuditKeyID) {
		return corrupt("audit_key_id is not an audit key id (16 hex digits)")
	}
	if m.AuditKeyIncluded != (m.KEKIncluded && m.AuditKeyID != "") {
		return corrupt("audit_key_included must be true exactly when the keys are included and the chain has an audit key")
	}
	want := []string{DatabaseName}
	if m.KEKIncluded {
		if m.KEK == nil {
			return corrupt("kek_included is true but kek is missing")
		}
		if err := m.KEK.validate(); err != nil {
			return err
		}
		if len(m.KEKIDs) == 0 {
			return corrupt("kek_included is true but kek_ids is empty")
		}
		want = append(want, KEKName)
	} else if m.KEK != nil {
		return corrupt("kek is set but kek_included is false")
	}
	if len(m.Members) != len(want) {
		return corrupt("members lists %d members, want %d (%v)", len(m.Members), len(want), want)
	}
	for i, mem := range m.Members {
		if mem.Name != want[i] {
			return corrupt("members[%d] is %q, want %q", i, mem.Name, want[i])
		}
		limit := int64(maxDatabaseSize)
		if mem.Name == KEKName {
			limit = maxKEKSize
		}
		if mem.Size < 0 || mem.Size > limit {
			return corrupt("member %s: size %d is out of range", mem.Name, mem.Size)
		}
		if !sha256Form.MatchString(mem.SHA256) {
			return corrupt("member %s: sha256 is not 64 lowercase hex digits", mem.Name)
		}
	}
	return nil
}

// parseManifest decodes and validates a manifest, refusing unknown fields
// and trailing data.
func parseManifest(data []byte) (*Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, corrupt("%s: %v", ManifestName, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, corrupt("%s: data after the JSON object", ManifestName)
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Archive is a backup read and checked by Read.
type Archive struct {
	Manifest Manifest
	// SealedKEK is the kek.enc member (encrypted), when the backup has one.
	SealedKEK []byte
}

// Read reads a backup from r: the manifest, then each member it lists,
// checking every member's name, type, size and SHA-256 and that nothing
// follows. The database member's bytes go to db as they are read, so a
// caller that gets an error must discard what db received. Every error
// wraps ErrCorrupt or ErrNewerFormat, or is a read error of r.
func Read(r io.Reader, db io.Writer) (*Archive, error) {
	tr := tar.NewReader(ioReader{r})
	hdr, err := next(tr, ManifestName)
	if err != nil {
		return nil, err
	}
	if hdr.Size > maxManifestSize {
		return nil, corrupt("%s is %d bytes, more than %d", ManifestName, hdr.Size, maxManifestSize)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		return nil, readErr(ManifestName, err)
	}
	m, err := parseManifest(data)
	if err != nil {
		return nil, err
	}
	a := &Archive{Manifest: *m}
	for _, mem := range m.Members {
		hdr, err := next(tr, mem.Name)
		if err != nil {
			return nil, err
		}
		if hdr.Size != mem.Size {
			return nil, corrupt("member %s is %d bytes, the manifest says %d", mem.Name, hdr.Size, mem.Size)
		}
		var buf bytes.Buffer
		var dst io.Writer = ioWriter{db}
		if mem.Name == KEKName {
			dst = &buf
		}
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(h, dst), tr)
		if err != nil {
			return nil, readErr(mem.Name, err)
		}
		if n != mem.Size {
			return nil, corrupt("member %s ends after %d of its %d bytes (the file is truncated)", mem.Name, n, mem.Size)
		}
		if sum := hex.EncodeToString(h.Sum(nil)); sum != mem.SHA256 {
			return nil, corrupt("member %s has sha256 %.16s…, the manifest says %.16s…", mem.Name, sum, mem.SHA256)
		}
		if mem.Name == KEKName {
			a.SealedKEK = buf.Bytes()
		}
	}
	switch hdr, err := tr.Next(); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, readErr("the end of the archive", err)
	default:
		return nil, corrupt("unexpected member %q after the ones the manifest lists", hdr.Name)
	}
	return a, nil
}

// next reads the next header and requires a regular file called name.
func next(tr *tar.Reader, name string) (*tar.Header, error) {
	hdr, err := tr.Next()
	if errors.Is(err, io.EOF) {
		return nil, corrupt("member %s is missing (the file is truncated or incomplete)", name)
	}
	if err != nil {
		return nil, readErr(name, err)
	}
	if hdr.Name != name {
		return nil, corrupt("found member %q where %s should be", hdr.Name, name)
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil, corrupt("member %s is not a regular file", name)
	}
	return hdr, nil
}

// readErr wraps an error met while reading the archive: one of the file
// or of db (an ioError) as it is, anything archive/tar found wrong (a bad
// header, a short member) as ErrCorrupt.
func readErr(what string, err error) error {
	var e *ioError
	if errors.As(err, &e) {
		return fmt.Errorf("backup: read %s: %w", what, e.err)
	}
	return corrupt("%s: %v (the file is truncated or damaged)", what, err)
}

// ioError marks an error of the file being read or of the database
// writer, as opposed to damage in the archive.
type ioError struct{ err error }

func (e *ioError) Error() string { return e.err.Error() }
func (e *ioError) Unwrap() error { return e.err }

// ioReader marks every error of r but io.EOF as an ioError.
type ioReader struct{ r io.Reader }

func (r ioReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = &ioError{err}
	}
	return n, err
}

// ioWriter marks every error of w as an ioError.
type ioWriter struct{ w io.Writer }

func (w ioWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if err != nil {
		err = &ioError{err}
	}
	return n, err
}

// writeArchive writes the manifest and members in the format Read reads.
// db and kek are the members' contents; kek is nil without --include-kek.
func writeArchive(w io.Writer, m *Manifest, db io.Reader, kek []byte) error {
	tw := tar.NewWriter(w)
	body, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("backup: encode manifest: %w", err)
	}
	body = append(body, '\n')
	put := func(name string, size int64, r io.Reader) error {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o600, ModTime: m.CreatedAt.Truncate(time.Second), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("backup: write %s: %w", name, err)
		}
		n, err := io.Copy(tw, r)
		if err != nil {
			return fmt.Errorf("backup: write %s: %w", name, err)
		}
		if n != size {
			return fmt.Errorf("backup: write %s: %d bytes, expected %d (did the file change?)", name, n, size)
		}
		return nil
	}
	if err := put(ManifestName, int64(len(body)), bytes.NewReader(body)); err != nil {
		return err
	}
	for _, mem := range m.Members {
		var r io.Reader = db
		if mem.Name == KEKName {
			r = bytes.NewReader(kek)
		}
		if err := put(mem.Name, mem.Size, r); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("backup: write archive: %w", err)
	}
	return nil
}
