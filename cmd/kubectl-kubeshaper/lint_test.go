package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// lint on a directory of good and bad manifests: the exact lines (the
// agent's own grammar and Event text from pkg/rules), their order (files
// sorted, documents in order, keys sorted), and the exit status.
func TestLintDirectory(t *testing.T) {
	want := []string{
		`testdata/lint/bad/broken.yaml:document 1:-: not YAML: yaml: line 5: did not find expected ',' or '}'`,
		`testdata/lint/bad/pods.yaml:Pod/shop/client:kubeshaper.io/bandwidth: invalid annotation kubeshaper.io/bandwidth="50 furlongs egress": rate "50furlongs" has unknown unit "furlongs": want bps, kbps, mbps, gbps, bit, kbit, mbit or gbit (bits per second, k=1000)`,
		`testdata/lint/bad/pods.yaml:Pod/shop/client:kubeshaper.io/bandwith: unknown key, ignored by the agent: kubeshaper reads kubernetes.io/egress-bandwidth, kubernetes.io/ingress-bandwidth, kubeshaper.io/bandwidth, kubeshaper.io/corrupt, kubeshaper.io/delay, kubeshaper.io/duplicate, kubeshaper.io/duration, kubeshaper.io/loss, kubeshaper.io/monitor, kubeshaper.io/program, kubeshaper.io/until`,
		`testdata/lint/bad/pods.yaml:Pod/shop/client:kubeshaper.io/monitor: want "true" or "false", got "maybe" (anything but "false" counts the pod)`,
		`testdata/lint/bad/pods.yaml:Service/db:kubeshaper.io/delay: invalid annotation kubeshaper.io/delay="-5ms": no direction: add egress (traffic the pod sends), ingress (traffic it receives) or both`,
		`testdata/lint/bad/pods.yaml:Service/db:kubeshaper.io/until: invalid annotation "kubeshaper.io/until"="yesterday": "yesterday" is not an RFC 3339 time: want e.g. 2026-12-01T10:00:00Z`,
		`testdata/lint/bad/workloads.yaml:Deployment/api:kubeshaper.io/bandwidth: no effect on the Deployment itself: kubeshaper reads its pods' annotations (spec.template.metadata.annotations)`,
		`testdata/lint/bad/workloads.yaml:Deployment/api:kubeshaper.io/loss: pod template: invalid annotation kubeshaper.io/loss="uniform egress 150%": loss "150%" is out of range: want more than 0% and at most 100%`,
		`testdata/lint/bad/workloads.yaml:StatefulSet/store:kubernetes.io/ingress-bandwidth: pod template: the value must be a string (quote it): got 10`,
		`testdata/lint/bad/workloads.yaml:CronJob/report:kubeshaper.io/delay: pod template: invalid annotation kubeshaper.io/delay="80ms sideways": unexpected word "sideways": a clause has one delay and one direction (egress, ingress or both)`,
		`testdata/lint/bad/workloads.yaml:Namespace/shop:kubeshaper.io/bandwidth: kubeshaper reads the annotations of Pods and Services only`,
	}
	code, stdout, stderr := runLint(t, nil, "lint", "-f", "testdata/lint")
	if code != 1 {
		t.Errorf("exit status %d, want 1 (stderr: %s)", code, stderr)
	}
	got := strings.Split(strings.TrimRight(stdout, "\n"), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("lint output:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if stderr != "kubectl-kubeshaper lint: 11 problem(s) in 11 object(s) checked\n" {
		t.Errorf("stderr %q", stderr)
	}
}

func TestLintGood(t *testing.T) {
	code, stdout, stderr := runLint(t, nil, "lint", "-f", "testdata/lint/good")
	if code != 0 || stdout != "" {
		t.Errorf("exit status %d, stdout %q, want 0 and nothing", code, stdout)
	}
	if stderr != "kubectl-kubeshaper lint: 5 object(s) checked, no problems\n" {
		t.Errorf("stderr %q", stderr)
	}
}

// Standard input, as in a CI pipeline: helm template … | kubectl kubeshaper lint -f -
func TestLintStdin(t *testing.T) {
	data, err := os.ReadFile("testdata/lint/bad/workloads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, _ := runLint(t, data, "lint", "-f", "-")
	if code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	first := "-:Deployment/api:kubeshaper.io/bandwidth: no effect on the Deployment itself: kubeshaper reads its pods' annotations (spec.template.metadata.annotations)"
	if got := strings.Split(stdout, "\n"); len(got) != 6 || got[0] != first {
		t.Errorf("stdout:\n%s\nwant 5 lines, the first %q", stdout, first)
	}
}

func TestLintUsage(t *testing.T) {
	if code, _, stderr := runLint(t, nil, "lint"); code != 2 || !strings.Contains(stderr, "lint needs -f") {
		t.Errorf("no -f: exit status %d, stderr %q; want 2 and the usage", code, stderr)
	}
	if code, _, stderr := runLint(t, nil, "lint", "-f", "testdata/nonexistent"); code != 2 || !strings.Contains(stderr, "no such file") {
		t.Errorf("missing file: exit status %d, stderr %q; want 2", code, stderr)
	}
}

func runLint(t *testing.T, stdin []byte, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(args, bytes.NewReader(stdin), &out, &errb)
	code := exitCode(err, &errb)
	return code, out.String(), errb.String()
}
