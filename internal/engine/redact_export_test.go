package engine

// For the tests of package engine_test.
var (
	// SecretEncodings returns the forms of a secret an upstream may echo.
	SecretEncodings = encodings
	// MentionsSecret reports whether a text holds a secret as the redactor
	// must find it (markers removed first).
	MentionsSecret = func(text, secret string) bool { return refMentions(markerless(text, secret), secret) }
)
