package reliability

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/agentenv"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// apiAnnotationLimit is kube-apiserver's limit on the total size of an
// object's annotations (keys + values): TotalAnnotationSizeLimitB.
const apiAnnotationLimit = 256 << 10

type hostileCase struct {
	name string
	key  string
	val  string
}

func hostileCases() []hostileCase {
	bw, loss, delay := "kubeshaper.io/bandwidth", "kubeshaper.io/loss", "kubeshaper.io/delay"
	prog, egr, ingr := "kubeshaper.io/program", "kubernetes.io/egress-bandwidth", "kubernetes.io/ingress-bandwidth"
	// The largest value the apiserver accepts for one key, with the
	// companion annotation every case carries.
	k, v := companionFor(bw)
	big := apiAnnotationLimit - len(bw) - len(k) - len(v)
	return []hostileCase{
		{"rate 0", bw, "0mbit egress"},
		{"rate 0 bare", bw, "0 egress"},
		{"rate 1e30", bw, "1e30mbit egress"},
		{"rate 10^30 spelled out", bw, "1000000000000000000000000000000bit egress"},
		{"rate negative", bw, "-10mbit egress"},
		{"rate NaN", bw, "NaNmbit egress"},
		{"rate NaN word", bw, "nan mbit egress"},
		{"rate Inf", bw, "Infmbit egress"},
		{"rate hex float", bw, "0x1p30bit egress"},
		{"burst 1e30", bw, "10mbit egress burst=1e30kb"},
		{"burst negative", bw, "10mbit egress burst=-1kb"},
		{"loss NaN", loss, "uniform egress NaN%"},
		{"loss negative", loss, "uniform egress -5%"},
		{"loss 1e30", loss, "uniform egress 1e30%"},
		{"loss over 100", loss, "uniform egress 100.0001%"},
		{"loss exponential negative", loss, "exponential egress -1"},
		{"loss exponential 1e30", loss, "exponential egress 1e30"},
		{"delay negative", delay, "-50ms egress"},
		{"delay 1e30", delay, "1e30ms egress"},
		{"delay NaN", delay, "NaNms egress"},
		{"delay jitter 1e30", delay, "50ms jitter=1e30s egress"},
		{"k8s bandwidth 0", egr, "0"},
		{"k8s bandwidth negative", egr, "-10M"},
		{"k8s bandwidth 1e30", egr, "1e30"},
		{"k8s bandwidth NaN", ingr, "NaN"},
		{"k8s bandwidth huge quantity", ingr, "999999999999999999999999999999999999999Ei"},
		{"unicode fullwidth digits", bw, "１０mbit egress"},
		{"unicode accent", bw, "10mbit égress"},
		{"unicode emoji", bw, "10mbit egress 🚀"},
		{"unicode right-to-left override", bw, "10mbit \u202eegress"},
		{"NUL byte", bw, "10mbit\x00egress"},
		{"invalid UTF-8", bw, "10mbit egress \xff\xfe"},
		{"one bad clause of two", bw, "10mbit egress; 0mbit ingress"},
		{"one bad clause of many", bw, strings.Repeat("10mbit egress; ", 500) + "oops"},
		{"program path traversal", prog, "../../etc/passwd egress"},
		{"program absolute path", prog, "/bin/sh egress"},
		{"program object file name", prog, "dropper.o egress"},
		{"program hidden file", prog, ".x egress"},
		{"program param with space", prog, "dropper egress DROP=\"1 2\""},
		{fmt.Sprintf("largest value the API accepts (%d bytes)", big), bw, strings.Repeat("9", big-len("mbit egress")) + "mbit egress"},
	}
}

// Every hostile case rides with a valid annotation of another key, which
// must apply whole while the hostile key is ignored whole.
func companionFor(key string) (string, string) {
	if key == "kubeshaper.io/loss" {
		return "kubeshaper.io/bandwidth", "15mbit ingress"
	}
	return "kubeshaper.io/loss", "uniform ingress 3%"
}

// TestHostileAnnotations sends absurd values through the real API and
// agent, one pod each, next to a valid annotation: each must give one clear
// InvalidAnnotation Warning Event (naming the key, quoting a bounded part
// of the value), leave the map with exactly the valid annotation's rule —
// nothing of the hostile key, in any direction — and never crash the
// agent. The apiserver itself refuses a 10 MB annotation (its limit is
// 256 KiB for all annotations together), so the largest value it accepts
// is the largest case.
func TestHostileAnnotations(t *testing.T) {
	w := agentenv.New(t, "rh")
	ctx := context.Background()
	cases := hostileCases()

	// What the API refuses never reaches the agent.
	for _, size := range []int{10 << 20, apiAnnotationLimit} {
		_, err := w.CS.CoreV1().Pods(w.NS).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("toolarge%d", size), Annotations: map[string]string{"kubeshaper.io/bandwidth": strings.Repeat("1", size)}},
			Spec:       corev1.PodSpec{NodeName: agentenv.NodeName, Containers: []corev1.Container{{Name: "c", Image: "none"}}},
		}, metav1.CreateOptions{})
		if err == nil {
			t.Fatalf("the apiserver accepted a %d-byte annotation", size)
		}
		t.Logf("a %d-byte annotation: the apiserver refuses it: %.160s", size, err)
	}

	pods := make([]*podCase, len(cases))
	var wg sync.WaitGroup
	errs := make(chan error, len(cases))
	for i, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := w.TryAddPod(fmt.Sprintf("h%d", i))
			if err != nil {
				errs <- err
				return
			}
			name := fmt.Sprintf("h%d", i)
			ck, cv := companionFor(c.key)
			ann := map[string]string{c.key: c.val, ck: cv}
			if _, err := w.Env.CreatePodWithIPs(ctx, w.NS, name, agentenv.NodeName, []string{p.IP.String()}, ann, nil); err != nil {
				errs <- fmt.Errorf("%s: the apiserver refused it: %w", c.name, err)
				return
			}
			idx, err := w.TryIfindex(p)
			if err != nil {
				errs <- err
				return
			}
			pods[i] = &podCase{hostileCase: c, pod: name, ifindex: idx}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// The grammar must reject each value (else the case tests nothing).
	for _, c := range cases {
		if _, err := rules.ParseValue(c.key, c.val); err == nil {
			t.Errorf("%s: %s=%.40q parses: not a hostile case", c.name, c.key, c.val)
		}
	}
	ag := w.StartAgent(agentenv.Options{})

	maxMsg := 0
	for _, pc := range pods {
		var ev []corev1.Event
		w.Eventually(15*time.Second, pc.name+": InvalidAnnotation event", func() (bool, string) {
			ev = w.Events(pc.pod, "InvalidAnnotation")
			return len(ev) > 0, ""
		})
		msg := ev[0].Message
		maxMsg = max(maxMsg, len(msg))
		if ev[0].Type != corev1.EventTypeWarning || !strings.Contains(msg, pc.key) || len(ev) != 1 {
			t.Errorf("%s: %d events, first %s %q: want one Warning naming %s", pc.name, len(ev), ev[0].Type, msg, pc.key)
		}
		if len(msg) > 2048 {
			t.Errorf("%s: Event message of %d bytes: want it bounded", pc.name, len(msg))
		}
		ck, cv := companionFor(pc.key)
		companion, _ := rules.ParseAnnotations(map[string]string{ck: cv})
		for _, d := range rules.Directions {
			cfg, ok := w.RuleAt(pc.ifindex, d)
			want := wantOf(companion[d])
			if !ok || !want.matches(got(cfg)) || cfg.Delay != 0 || cfg.Jitter != 0 {
				t.Errorf("%s: %s rule %q, want exactly the companion's %s=%q: half-applied or missing", pc.name, d, cfg.String(), ck, cv)
			}
		}
		if fs, err := allFilters(w, pc.ifindex); err != nil || len(fs) != 2 {
			t.Errorf("%s: filters %+v (%v), want kubeshaper's two", pc.name, fs, err)
		}
	}

	// Every key hostile at once, 4 KB each, on a pod; and on a Service
	// selecting a healthy pod: one Event each, nothing applied.
	all := map[string]string{}
	for _, k := range rules.AnnotationKeys() {
		all[k] = strings.Repeat("\u202e-1e30 NaN ", 300)
	}
	pa, pb := w.AddPod("all"), w.AddPod("svc")
	w.Pod(pa, "all", nil, all)
	w.Pod(pb, "svcpod", map[string]string{"app": "h"}, nil)
	if _, err := w.Env.CreateService(ctx, w.NS, "hostile", map[string]string{"app": "h"}, all); err != nil {
		t.Fatal(err)
	}
	for _, obj := range []string{"all", "hostile"} {
		w.Eventually(15*time.Second, obj+": InvalidAnnotation event", func() (bool, string) {
			ev := w.Events(obj, "InvalidAnnotation")
			if len(ev) == 0 {
				return false, ""
			}
			maxMsg = max(maxMsg, len(ev[0].Message))
			for _, k := range rules.AnnotationKeys() {
				if !strings.Contains(ev[0].Message, k) {
					t.Errorf("%s: the Event does not name %s: %.300q", obj, k, ev[0].Message)
				}
			}
			if len(ev[0].Message) > 8192 {
				t.Errorf("%s: Event message of %d bytes for %d keys of 4 KB", obj, len(ev[0].Message), len(all))
			}
			return true, ""
		})
	}
	for _, p := range []*netlab.Pod{pa, pb} {
		w.Eventually(10*time.Second, p.Name+" counted with no rule", func() (bool, string) {
			for _, d := range rules.Directions {
				cfg, ok := w.Rule(p, d)
				if !ok || cfg.String() != "monitor" {
					return false, cfg.String()
				}
			}
			return w.Filters(p) == 2, ""
		})
	}

	if exited, err := ag.Exited(); exited {
		t.Fatalf("the agent exited: %v", err)
	}
	if n := ag.CountLog("panic"); n > 0 {
		t.Errorf("the agent's log mentions panic %d times", n)
	}
	t.Logf("hostile input: %d absurd annotations (and every key at once on a pod and a Service, 4 KB each) through the API and the agent: one InvalidAnnotation Event each (longest %d bytes), 0 half-applied rules, agent up, 0 panics; the apiserver refuses annotations over 256 KiB in all (10 MB: 413 from its 3 MiB body limit; 256 KiB: invalid)",
		len(cases), maxMsg)
	record(t, "hostile_input", map[string]any{"cases": len(cases), "longest_event_bytes": maxMsg, "api_annotation_limit_bytes": apiAnnotationLimit})
}

type podCase struct {
	hostileCase
	pod     string
	ifindex int
}

// TestCustomProgramNotELF: a custom program (kubeshaper.io/program) whose file in the
// admin's program directory is not a BPF ELF object, or is a symbolic link
// leading out of the directory, must give a clear Warning Event and attach
// nothing. It runs only once the agent has --program-dir (the loader).
func TestCustomProgramNotELF(t *testing.T) {
	help, _ := exec.Command(agentenv.Binary(t), "-h").CombinedOutput()
	if !strings.Contains(string(help), "-program-dir") {
		t.Skip("this agent has no --program-dir: custom programs are not loaded; the grammar's refusal of ../ names is in TestHostileAnnotations")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notelf.o"), []byte("#!/bin/sh\necho this is not an ELF object\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "escape.o")); err != nil {
		t.Fatal(err)
	}
	w := agentenv.New(t, "re")
	ag := w.StartAgent(agentenv.Options{Args: []string{"--program-dir", dir}})
	for _, prog := range []string{"notelf", "escape", "missing"} {
		p := w.AddPod(prog)
		w.Pod(p, "p"+prog, nil, map[string]string{"kubeshaper.io/program": prog + " egress", "kubeshaper.io/loss": "uniform ingress 3%"})
		w.Eventually(15*time.Second, prog+": a Warning event naming the program", func() (bool, string) {
			for _, e := range w.Events("p"+prog, "") {
				if e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, prog) {
					t.Logf("%s: %s: %.200s", prog, e.Reason, e.Message)
					return true, ""
				}
			}
			return false, ""
		})
		w.WaitLoss(p, rules.Ingress, 0.03) // the pod's other rule applies
		if fs, err := allFilters(w, w.Ifindex(p)); err != nil || len(fs) != 2 {
			t.Errorf("%s: filters %+v (%v): a refused program must attach nothing beyond kubeshaper's two", prog, fs, err)
		}
	}
	t.Logf("custom programs: a file that is not ELF, a symbolic link out of the program directory and a missing file: a Warning Event each, nothing attached, the pod's other rule applied")
	if exited, err := ag.Exited(); exited {
		t.Fatalf("the agent exited: %v", err)
	}
}
