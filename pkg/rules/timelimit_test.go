package rules

import (
	"strings"
	"testing"
	"time"
)

func TestParseTimeLimit(t *testing.T) {
	until := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		ann     map[string]string
		want    TimeLimit
		wantErr string
	}{
		{ann: map[string]string{}, want: TimeLimit{}},
		{ann: map[string]string{KeyDuration: "5m"}, want: TimeLimit{Duration: 5 * time.Minute}},
		{ann: map[string]string{KeyDuration: " 1H30M "}, want: TimeLimit{Duration: 90 * time.Minute}},
		{ann: map[string]string{KeyUntil: "2026-12-01T10:00:00Z"}, want: TimeLimit{Until: until}},
		{ann: map[string]string{KeyUntil: "2026-12-01T11:00:00+01:00", KeyDuration: "10s"}, want: TimeLimit{Until: until, Duration: 10 * time.Second}},
		{ann: map[string]string{KeyDuration: "0s"}, wantErr: "out of range"},
		{ann: map[string]string{KeyDuration: "-5m"}, wantErr: "out of range"},
		{ann: map[string]string{KeyDuration: "9000h"}, wantErr: "out of range"},
		{ann: map[string]string{KeyDuration: "5"}, wantErr: "not a duration"},
		{ann: map[string]string{KeyUntil: "tomorrow"}, wantErr: "not an RFC 3339 time"},
		{ann: map[string]string{KeyUntil: "2026-12-01 10:00:00"}, wantErr: "not an RFC 3339 time"},
	} {
		got, errs := ParseTimeLimit(tc.ann)
		if tc.wantErr != "" {
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.wantErr) || !got.IsZero() {
				t.Errorf("%v: %v %v, want error %q", tc.ann, got, errs, tc.wantErr)
			}
			continue
		}
		if len(errs) != 0 || !got.Until.Equal(tc.want.Until) || got.Duration != tc.want.Duration {
			t.Errorf("%v: %v %v, want %v", tc.ann, got, errs, tc.want)
		}
	}
	first := time.Date(2026, 12, 1, 9, 59, 55, 0, time.UTC)
	if d := (TimeLimit{Until: until, Duration: 10 * time.Second}).Deadline(first); !d.Equal(until) {
		t.Errorf("deadline %v, want the earlier %v", d, until)
	}
	if d := (TimeLimit{Duration: 3 * time.Second}).Deadline(first); !d.Equal(first.Add(3 * time.Second)) {
		t.Errorf("deadline %v", d)
	}
	if d := (TimeLimit{}).Deadline(first); !d.IsZero() {
		t.Errorf("no limit: deadline %v", d)
	}
}
