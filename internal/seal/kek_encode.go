package seal

import "fmt"

// DecodeKEK parses a KEK given as 32 bytes in standard base64 (what
// [EncodeKEK] returns and EnvSource reads) or in the text format of a KEK
// file. Errors never quote the input.
func DecodeKEK(text string) (*KEK, error) {
	k, err := parseEnvKEK(text)
	if err != nil {
		return nil, fmt.Errorf("seal: decode kek: %w", err)
	}
	return k, nil
}
