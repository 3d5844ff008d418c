package backup

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the archive fixtures in testdata/ and the seed corpus of FuzzReadBackup")

// fixtureKEK stands in for an encrypted kek.enc member.
var fixtureKEK = bytes.Repeat([]byte{0x5a}, 101)

// fixtures are the named archives in testdata/: two valid ones and one per
// way a file can be damaged or hostile, with what Read must say.
var fixtures = []struct {
	name string
	make func(t testing.TB) []byte
	// want is Read's exact error, or "" for a valid archive.
	want string
	is   error
}{
	{"valid.tar", func(t testing.TB) []byte { return archiveOf(t, fixtureManifest(nil), nil) }, "", nil},
	{"valid-kek-included.tar", func(t testing.TB) []byte { return archiveOf(t, fixtureManifest(fixtureKEK), fixtureKEK) }, "", nil},
	{"empty.tar", func(t testing.TB) []byte { return []byte{} },
		"backup: read: the file is not a trustflow backup, or it is damaged: member manifest.json is missing (the file is truncated or incomplete)", ErrCorrupt},
	{"not-a-tar.tar", func(t testing.TB) []byte {
		return bytes.Repeat([]byte("PK\x03\x04 this is a zip, or anything else. "), 40)
	},
		"backup: read: the file is not a trustflow backup, or it is damaged: manifest.json: archive/tar: invalid tar header (the file is truncated or damaged)", ErrCorrupt},
	{"truncated-in-database.tar", func(t testing.TB) []byte {
		// The database is the last member: its one data block, then the
		// two zero blocks that end an archive.
		b := archiveOf(t, fixtureManifest(nil), nil)
		return b[:len(b)-1024-512+20]
	}, "backup: read: the file is not a trustflow backup, or it is damaged: trustflow.db: unexpected EOF (the file is truncated or damaged)", ErrCorrupt},
	{"truncated-after-database.tar", func(t testing.TB) []byte {
		return rawArchive(t, entry{name: ManifestName, body: manifestJSON(t, fixtureManifest(fixtureKEK))}, entry{name: DatabaseName, body: fakeDB})
	}, "backup: read: the file is not a trustflow backup, or it is damaged: member kek.enc is missing (the file is truncated or incomplete)", ErrCorrupt},
	{"checksum-mismatch.tar", func(t testing.TB) []byte {
		return rawArchive(t, entry{name: ManifestName, body: manifestJSON(t, fixtureManifest(nil))},
			entry{name: DatabaseName, body: bytes.ToUpper(fakeDB)})
	}, "backup: read: the file is not a trustflow backup, or it is damaged: member trustflow.db has sha256 " + sum(bytes.ToUpper(fakeDB))[:16] + "…, the manifest says " + sum(fakeDB)[:16] + "…", ErrCorrupt},
	{"size-mismatch.tar", func(t testing.TB) []byte {
		return rawArchive(t, entry{name: ManifestName, body: manifestJSON(t, fixtureManifest(nil))},
			entry{name: DatabaseName, body: append(append([]byte{}, fakeDB...), 'x')})
	}, fmt.Sprintf("backup: read: the file is not a trustflow backup, or it is damaged: member trustflow.db is %d bytes, the manifest says %d", len(fakeDB)+1, len(fakeDB)), ErrCorrupt},
	{"manifest-not-first.tar", func(t testing.TB) []byte {
		return rawArchive(t, entry{name: DatabaseName, body: fakeDB}, entry{name: ManifestName, body: manifestJSON(t, fixtureManifest(nil))})
	}, `backup: read: the file is not a trustflow backup, or it is damaged: found member "trustflow.db" where manifest.json should be`, ErrCorrupt},
	{"extra-member.tar", func(t testing.TB) []byte {
		return rawArchive(t, entry{name: ManifestName, body: manifestJSON(t, fixtureManifest(nil))},
			entry{name: DatabaseName, body: fakeDB}, entry{name: "notes.txt", body: []byte("hello")})
	}, `backup: read: the file is not a trustflow backup, or it is damaged: unexpected member "notes.txt" after the ones the manifest lists`, ErrCorrupt},
	{"symlink-database.tar", func(t testing.TB) []byte {
		return rawArchive(t, entry{name: ManifestName, body: manifestJSON(t, fixtureManifest(nil))}, entry{name: DatabaseName, typ: tar.TypeSymlink})
	}, "backup: read: the file is not a trustflow backup, or it is damaged: member trustflow.db is not a regular file", ErrCorrupt},
	{"newer-format.tar", func(t testing.TB) []byte {
		m := fixtureManifest(nil)
		m.FormatVersion, m.TrustflowVersion = 2, "9.0.0"
		return rawArchive(t, entry{name: ManifestName, body: manifestJSON(t, m)}, entry{name: DatabaseName, body: fakeDB})
	}, "backup: read: the file is in a newer backup format: it is format version 2 and this trustflow reads version 1", ErrNewerFormat},
	{"unknown-manifest-field.tar", func(t testing.TB) []byte {
		body := bytes.Replace(manifestJSON(t, fixtureManifest(nil)), []byte(`"dialect"`), []byte(`"compression": "zstd", "dialect"`), 1)
		return rawArchive(t, entry{name: ManifestName, body: body}, entry{name: DatabaseName, body: fakeDB})
	}, `backup: read: the file is not a trustflow backup, or it is damaged: manifest.json: json: unknown field "compression"`, ErrCorrupt},
	{"postgres-dialect.tar", func(t testing.TB) []byte {
		m := fixtureManifest(nil)
		m.Dialect = "postgres"
		return rawArchive(t, entry{name: ManifestName, body: manifestJSON(t, m)}, entry{name: DatabaseName, body: fakeDB})
	}, `backup: read: the file is not a trustflow backup, or it is damaged: dialect "postgres": this trustflow restores only SQLite backups (PostgreSQL is backed up with pg_dump)`, ErrCorrupt},
	{"kdf-too-costly.tar", func(t testing.TB) []byte {
		m := fixtureManifest(fixtureKEK)
		m.KEK.ScryptLogN = 30
		return rawArchive(t, entry{name: ManifestName, body: manifestJSON(t, m)}, entry{name: DatabaseName, body: fakeDB}, entry{name: KEKName, body: fixtureKEK})
	}, "backup: read: the file is not a trustflow backup, or it is damaged: kek: scrypt parameters log N 30, r 8, p 1 are out of range (log N 10 to 20, r 1 to 16, p 1 to 4)", ErrCorrupt},
	{"kek-member-missing-from-manifest.tar", func(t testing.TB) []byte {
		m := fixtureManifest(fixtureKEK)
		m.Members = m.Members[:1]
		return rawArchive(t, entry{name: ManifestName, body: manifestJSON(t, m)}, entry{name: DatabaseName, body: fakeDB}, entry{name: KEKName, body: fixtureKEK})
	}, "backup: read: the file is not a trustflow backup, or it is damaged: members lists 1 members, want 2 ([trustflow.db kek.enc])", ErrCorrupt},
	{"bad-kek-id.tar", func(t testing.TB) []byte {
		m := fixtureManifest(nil)
		m.KEKIDs = []string{"../../etc/passwd"}
		return rawArchive(t, entry{name: ManifestName, body: manifestJSON(t, m)}, entry{name: DatabaseName, body: fakeDB})
	}, "backup: read: the file is not a trustflow backup, or it is damaged: kek_ids[0] is not a key-encryption key id (16 hex digits)", ErrCorrupt},
}

// TestReadFixtures reads every named fixture and checks Read's exact
// answer. With -update it first rewrites them and the fuzz seed corpus.
func TestReadFixtures(t *testing.T) {
	corpus := filepath.Join("testdata", "fuzz", "FuzzReadBackup")
	if *update {
		require.NoError(t, os.MkdirAll(corpus, 0o755))
		for _, fx := range fixtures {
			data := fx.make(t)
			require.NoError(t, os.WriteFile(filepath.Join("testdata", fx.name), data, 0o644))
			seed := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
			require.NoError(t, os.WriteFile(filepath.Join(corpus, strings.TrimSuffix(fx.name, ".tar")), []byte(seed), 0o644))
		}
	}
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(filepath.Join("testdata", fx.name))
			require.NoError(t, err)
			require.Equal(t, fx.make(t), data, "the fixture is what its builder makes; run go test -run TestReadFixtures -update to rewrite it")
			var db bytes.Buffer
			a, err := Read(bytes.NewReader(data), &db)
			if fx.want == "" {
				require.NoError(t, err)
				require.Equal(t, fakeDB, db.Bytes())
				if a.Manifest.KEKIncluded {
					require.Equal(t, fixtureKEK, a.SealedKEK)
				}
				return
			}
			require.ErrorIs(t, err, fx.is)
			require.EqualError(t, err, fx.want)
			require.Nil(t, a)
		})
	}
}

// TestReadPassesIOErrorsOn shows that a failing disk is not reported as a
// damaged backup.
func TestReadPassesIOErrorsOn(t *testing.T) {
	t.Parallel()
	data := archiveOf(t, fixtureManifest(nil), nil)
	boom := errors.New("input/output error")
	_, err := Read(io.MultiReader(bytes.NewReader(data[:1600]), iotest{boom}), io.Discard)
	require.ErrorIs(t, err, boom)
	require.NotErrorIs(t, err, ErrCorrupt)
	require.EqualError(t, err, "backup: read trustflow.db: input/output error")

	full := errors.New("no space left on device")
	_, err = Read(bytes.NewReader(data), failWriter{full})
	require.ErrorIs(t, err, full)
	require.NotErrorIs(t, err, ErrCorrupt)
}

type iotest struct{ err error }

func (r iotest) Read([]byte) (int, error) { return 0, r.err }

type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }

// FuzzReadBackup feeds Read arbitrary files. It must never panic or read
// without bound, must report every refusal as damage (or a newer format),
// and must accept only archives whose every member matches a valid
// manifest.
func FuzzReadBackup(f *testing.F) {
	f.Add(archiveOf(f, fixtureManifest(nil), nil))
	f.Add(archiveOf(f, fixtureManifest(fixtureKEK), fixtureKEK))
	f.Fuzz(func(t *testing.T, data []byte) {
		var db bytes.Buffer
		a, err := Read(bytes.NewReader(data), &db)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNewerFormat) {
				t.Fatalf("error is neither damage nor a newer format: %v", err)
			}
			if a != nil {
				t.Fatal("an archive with an error")
			}
			return
		}
		if err := a.Manifest.validate(); err != nil {
			t.Fatalf("accepted an invalid manifest: %v", err)
		}
		mem, ok := a.Manifest.Member(DatabaseName)
		if !ok || int64(db.Len()) != mem.Size || sum(db.Bytes()) != mem.SHA256 {
			t.Fatalf("accepted a database member that does not match the manifest")
		}
		if a.Manifest.KEKIncluded {
			mem, ok := a.Manifest.Member(KEKName)
			if !ok || sum(a.SealedKEK) != mem.SHA256 {
				t.Fatalf("accepted a kek member that does not match the manifest")
			}
		}
	})
}
