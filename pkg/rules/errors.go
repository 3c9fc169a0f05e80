package rules

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// maxQuotedValue bounds how much of an offending value an error repeats:
// errors end up in Events and logs, which must stay readable (and within
// the API server's size limits) even for a 4 KB value.
const (
	maxQuotedValue = 200
	maxQuotedToken = 64
)

// AnnotationError reports one annotation whose value was rejected. The key
// is ignored as a whole; other keys of the same object still apply.
type AnnotationError struct {
	Key   string
	Value string
	Err   error
}

func (e *AnnotationError) Error() string {
	key := e.Key
	if !isKnownKey(key) {
		key = quoteTrunc(key, maxQuotedToken)
	}
	return fmt.Sprintf("invalid annotation %s=%s: %v", key, quoteTrunc(e.Value, maxQuotedValue), e.Err)
}

func (e *AnnotationError) Unwrap() error { return e.Err }

// quoteTrunc quotes s Go-style (so control characters and invalid UTF-8
// show as escapes, not raw bytes in an Event) and cuts it so that the
// quoted text stays within about max bytes, saying how long the original
// was. The bound is on the quoted form because escaping can make one byte
// four ("\x94") and one rune ten ("\U0010ffff").
func quoteTrunc(s string, max int) string {
	quoted := 0
	for i := 0; i < len(s); {
		_, size := utf8.DecodeRuneInString(s[i:])
		// strconv.Quote escapes rune by rune (an invalid byte counts as
		// one), so the pieces' lengths add up.
		quoted += len(strconv.Quote(s[i:i+size])) - 2
		if quoted > max {
			return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(s[:i]), len(s))
		}
		i += size
	}
	return strconv.Quote(s)
}

// q quotes one word of a clause for an error message.
func q(s string) string { return quoteTrunc(s, maxQuotedToken) }
