package reliability

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/agentenv"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// fleet is many netns pods with Pod objects, and the model of what the
// agent should have applied to each: the test's own view of the
// annotations, against which the kernel's maps and filters are compared.
type fleet struct {
	w    *agentenv.World
	mu   sync.Mutex
	pods map[string]*member // by Pod name
}

type member struct {
	name    string
	net     *netlab.Pod
	ifindex int
	labels  map[string]string
	ann     map[string]string // the pod's own annotations
	object  bool              // the Pod object exists
}

func newFleet(w *agentenv.World) *fleet { return &fleet{w: w, pods: map[string]*member{}} }

// add creates n netns pods and their Pod objects, in parallel.
func (f *fleet) add(t *testing.T, names []string, labels map[string]string, ann func(i int) map[string]string) {
	t.Helper()
	type job struct {
		i    int
		name string
	}
	jobs := make(chan job)
	errs := make(chan error, len(names))
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				p, err := f.w.TryAddPod(j.name)
				if err != nil {
					errs <- err
					continue
				}
				idx, err := f.w.TryIfindex(p)
				if err != nil {
					errs <- err
					continue
				}
				m := &member{name: j.name, net: p, ifindex: idx, labels: labels, ann: ann(j.i), object: true}
				if _, err := f.w.Env.CreatePodWithIPs(context.Background(), f.w.NS, j.name, agentenv.NodeName, []string{p.IP.String()}, m.ann, labels); err != nil {
					errs <- err
					continue
				}
				f.mu.Lock()
				f.pods[j.name] = m
				f.mu.Unlock()
			}
		}()
	}
	for i, n := range names {
		jobs <- job{i, n}
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// annotate changes a pod's annotations, in the API and the model.
func (f *fleet) annotate(t *testing.T, name string, ann map[string]any) {
	t.Helper()
	f.w.Annotate("pod", name, ann)
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.pods[name]
	cp := map[string]string{}
	for k, v := range m.ann {
		cp[k] = v
	}
	for k, v := range ann {
		if v == nil {
			delete(cp, k)
		} else {
			cp[k] = v.(string)
		}
	}
	m.ann = cp
}

// deleteObject deletes the Pod object (its netns stays, as while a
// sandbox is being torn down).
func (f *fleet) deleteObject(t *testing.T, name string) {
	t.Helper()
	if err := f.w.CS.CoreV1().Pods(f.w.NS).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.pods[name].object = false
	f.mu.Unlock()
}

// deleteAll deletes the Pod object and the netns pod.
func (f *fleet) deleteAll(t *testing.T, name string) {
	t.Helper()
	f.deleteObject(t, name)
	f.mu.Lock()
	m := f.pods[name]
	delete(f.pods, name)
	f.mu.Unlock()
	if err := f.w.RemovePod(m.net); err != nil {
		t.Fatal(err)
	}
}

// want is the rule values one direction of a pod should carry.
type want struct {
	rateBits uint64
	loss     float64
}

func (w want) String() string { return fmt.Sprintf("rate=%d loss=%g", w.rateBits, w.loss) }

func wantOf(p rules.DirectionPolicy) want {
	var w want
	if p.Bandwidth != nil {
		w.rateBits = p.Bandwidth.RateBitsPerSec / 8 * 8 // the map holds bytes/s
	}
	if p.Loss != nil {
		w.loss = float64(p.Loss.Threshold32()) / (1 << 32)
	}
	return w
}

func got(c datapath.Config) want { return want{rateBits: c.RateBits(), loss: c.LossProbability()} }

func (w want) matches(g want) bool {
	return w.rateBits == g.rateBits && math.Abs(w.loss-g.loss) < 1e-6
}

// expected is every {ifindex, direction} the maps should hold: the pods
// with an object (all are counted, so both directions even without rules).
func (f *fleet) expected(svcPolicy rules.Policy) map[datapath.Key]want {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[datapath.Key]want{}
	for _, m := range f.pods {
		if !m.object {
			continue
		}
		own, _ := rules.ParseAnnotations(m.ann)
		pol := rules.Merge([]rules.Policy{svcPolicy}, own)
		for _, d := range rules.Directions {
			out[datapath.KeyOf(m.ifindex, d)] = wantOf(pol[d])
		}
	}
	return out
}

// diffMaps compares the rule map with the model; "" when they agree.
func diffMaps(exp map[datapath.Key]want, have map[datapath.Key]datapath.Config) string {
	var bad []string
	for k, w := range exp {
		c, ok := have[k]
		if !ok {
			bad = append(bad, fmt.Sprintf("ifindex %d %s missing (want %s)", k.Ifindex, k.Direction(), w))
		} else if g := got(c); !w.matches(g) {
			bad = append(bad, fmt.Sprintf("ifindex %d %s has %s, want %s", k.Ifindex, k.Direction(), g, w))
		}
	}
	for k := range have {
		if _, ok := exp[k]; !ok {
			bad = append(bad, fmt.Sprintf("ifindex %d %s: an entry no pod wants", k.Ifindex, k.Direction()))
		}
	}
	sort.Strings(bad)
	if len(bad) > 5 {
		bad = append(bad[:5], fmt.Sprintf("and %d more", len(bad)-5))
	}
	return strings.Join(bad, "; ")
}

// checkFilters verifies, on every veth of the fleet (objects deleted
// included), exactly one kubeshaper filter per hook for pods with an
// object and none for the others, and no other filter at all; and that
// kubeshaper has filters on no other interface of the node.
func (f *fleet) checkFilters(t *testing.T) (filters int) {
	t.Helper()
	f.mu.Lock()
	pods := make([]*member, 0, len(f.pods))
	for _, m := range f.pods {
		pods = append(pods, m)
	}
	f.mu.Unlock()
	wantIdx := map[int]bool{}
	for _, m := range pods {
		fs, err := allFilters(f.w, m.ifindex)
		if err != nil {
			t.Fatal(err)
		}
		filters += len(fs)
		if !m.object {
			if len(fs) != 0 {
				t.Errorf("pod %s was deleted but its veth keeps filters %+v (leak)", m.name, fs)
			}
			continue
		}
		wantIdx[m.ifindex] = true
		if len(fs) != 2 || fs[0].Hook == fs[1].Hook || !strings.HasPrefix(fs[0].Name, "kubeshaper") || !strings.HasPrefix(fs[1].Name, "kubeshaper") {
			t.Errorf("pod %s: filters %+v, want exactly one kubeshaper filter per hook (duplicate or missing)", m.name, fs)
		}
	}
	for idx := range f.w.AllOurFilters() {
		if !wantIdx[idx] {
			t.Errorf("kubeshaper filters on ifindex %d, which no pod with an object has (leak)", idx)
		}
	}
	return filters
}
