package audit

import (
	"encoding/hex"
	"encoding/json"
)

// ForgeMAC is what an attacker who guessed key would write: the MAC of r
// under guess, whatever key id r names.
func ForgeMAC(guess *Key, r Record) string {
	b, err := json.Marshal(canonicalKeyed{canonical: canonicalOf(r, 2), KeyID: r.KeyID})
	if err != nil {
		panic(err)
	}
	m := guess.newMAC()
	m.Write(b)
	return hex.EncodeToString(m.Sum(nil))
}
