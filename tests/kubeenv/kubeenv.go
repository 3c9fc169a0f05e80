// Package kubeenv runs a real, throw-away Kubernetes control plane (etcd and
// kube-apiserver, no kubelet, no controllers) on loopback for tests.
//
// kube-apiserver is built from the Go module proxy by tools/k8sbin/build.sh
// and cached under <repo>/.cache/k8s/<version>/bin; etcd is Debian's
// /usr/bin/etcd. See README.md in this directory.
//
//	env := kubeenv.Start(t)           // stopped by t.Cleanup
//	cs := env.Clientset()
//	env.CreateNode(ctx, "node-a")
//	env.CreatePod(ctx, "default", "web-0", "node-a", nil, map[string]string{"app": "web"})
package kubeenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Environment variables that override defaults.
const (
	// EnvAPIServer names a kube-apiserver binary to use instead of the cache.
	EnvAPIServer = "KUBESHAPER_KUBE_APISERVER"
	// EnvEtcd names the etcd binary (default /usr/bin/etcd).
	EnvEtcd = "KUBESHAPER_ETCD"
	// EnvCache moves the binary cache root (default <repo>/.cache/k8s);
	// tools/k8sbin/build.sh honours the same variable.
	EnvCache = "KUBESHAPER_K8S_CACHE"
)

const (
	// ServiceCIDR is --service-cluster-ip-range.
	ServiceCIDR = "10.96.0.0/16"
	// PodCIDR is the range CreateNode hands out per-node /24s from.
	PodCIDR = "10.244.0.0/16"

	adminUser = "kubeenv-admin"
)

// Options tune New / StartWithOptions. The zero value is fine.
type Options struct {
	// APIServerPath is the kube-apiserver binary. Default: $KUBESHAPER_KUBE_APISERVER,
	// else the cached build of tools/k8sbin/VERSION (built if missing).
	APIServerPath string
	// EtcdPath is the etcd binary. Default: $KUBESHAPER_ETCD, else /usr/bin/etcd.
	EtcdPath string
	// ExtraAPIServerArgs are appended to kube-apiserver's command line
	// (a repeated flag overrides the earlier one).
	ExtraAPIServerArgs []string
	// ReadyTimeout bounds each wait for etcd health and apiserver /readyz.
	// Default 60s.
	ReadyTimeout time.Duration
	// Logf receives progress messages. Default: stderr.
	Logf func(format string, args ...any)
}

// Env is a running etcd + kube-apiserver pair.
type Env struct {
	opts  Options
	dir   string
	token string
	caPEM []byte

	apiPort    int
	host       string // https://127.0.0.1:<apiPort>
	serverName string // the name to verify the certificate as ("": host's)
	etcdURL    string
	kubeconfig string

	mu        sync.Mutex // guards the processes
	etcd      *proc
	apiserver *proc
	stopped   bool

	csMu      sync.Mutex
	clientset kubernetes.Interface

	ipMu    sync.Mutex
	nodeSeq int            // nodes created by CreateNode
	podSeq  map[string]int // per-node pod IP counter
}

// Start starts a control plane for a test and registers t.Cleanup to stop
// it (printing the tails of both logs first if the test failed). It calls
// t.Fatal if anything goes wrong.
func Start(t testing.TB) *Env {
	t.Helper()
	return StartWithOptions(t, Options{})
}

// StartWithOptions is Start with options.
func StartWithOptions(t testing.TB, o Options) *Env {
	t.Helper()
	if o.Logf == nil {
		o.Logf = t.Logf
	}
	// Generous: a cold kube-apiserver build alone takes ~2.5 min on 2 cores.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	e, err := New(ctx, o)
	if err != nil {
		t.Fatalf("kubeenv: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(e.LogTails(60))
		}
		if err := e.Stop(); err != nil {
			t.Errorf("kubeenv: stop: %v", err)
		}
	})
	return e
}

// New starts etcd and kube-apiserver and waits until the apiserver is ready.
// The caller must call Stop.
func New(ctx context.Context, o Options) (_ *Env, retErr error) {
	if o.Logf == nil {
		o.Logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, "kubeenv: "+format+"\n", args...) }
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 60 * time.Second
	}
	begin := time.Now()

	if o.EtcdPath == "" {
		o.EtcdPath = os.Getenv(EnvEtcd)
	}
	if o.EtcdPath == "" {
		o.EtcdPath = "/usr/bin/etcd"
	}
	if _, err := os.Stat(o.EtcdPath); err != nil {
		return nil, fmt.Errorf("etcd binary: %w (Debian: apt-get install etcd-server; or set %s)", err, EnvEtcd)
	}
	if o.APIServerPath == "" {
		p, err := APIServerBinary(ctx, o.Logf)
		if err != nil {
			return nil, err
		}
		o.APIServerPath = p
	}

	dir, err := os.MkdirTemp("", "kubeenv-")
	if err != nil {
		return nil, err
	}
	e := &Env{opts: o, dir: dir, podSeq: map[string]int{}}
	defer func() {
		if retErr != nil {
			tails := e.LogTails(40)
			if err := e.Stop(); err != nil {
				o.Logf("cleanup after failed start: %v", err)
			}
			retErr = fmt.Errorf("%w\n%s", retErr, tails)
		}
	}()

	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdClient, etcdPeer := ports[0], ports[1]
	e.apiPort = ports[2]
	e.host = "https://127.0.0.1:" + strconv.Itoa(e.apiPort)
	e.etcdURL = "http://127.0.0.1:" + strconv.Itoa(etcdClient)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeer)

	pkiDir := filepath.Join(dir, "pki")
	for _, d := range []string{pkiDir, filepath.Join(dir, "etcd"), filepath.Join(dir, "apiserver-certs")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	p, err := generatePKI(pkiDir, net.IPv4(10, 96, 0, 1))
	if err != nil {
		return nil, fmt.Errorf("generate certificates: %w", err)
	}
	e.caPEM = p.caPEM
	if e.token, err = randomToken(); err != nil {
		return nil, err
	}
	tokenFile := filepath.Join(pkiDir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(e.token+","+adminUser+","+adminUser+",\"system:masters\"\n"), 0o600); err != nil {
		return nil, err
	}

	e.etcd = &proc{
		name:    "etcd",
		path:    o.EtcdPath,
		logPath: filepath.Join(dir, "etcd.log"),
		args: []string{
			"--name=kubeenv",
			"--data-dir=" + filepath.Join(dir, "etcd"),
			"--listen-client-urls=" + e.etcdURL,
			"--advertise-client-urls=" + e.etcdURL,
			"--listen-peer-urls=" + peerURL,
			"--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=kubeenv=" + peerURL,
			"--initial-cluster-state=new",
			"--logger=zap",
			"--log-outputs=stderr",
		},
	}
	e.apiserver = &proc{
		name:    "kube-apiserver",
		path:    o.APIServerPath,
		logPath: filepath.Join(dir, "kube-apiserver.log"),
		args: append([]string{
			"--etcd-servers=" + e.etcdURL,
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(e.apiPort),
			"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
			"--tls-cert-file=" + filepath.Join(pkiDir, "apiserver.crt"),
			"--tls-private-key-file=" + filepath.Join(pkiDir, "apiserver.key"),
			"--token-auth-file=" + tokenFile,
			"--authorization-mode=RBAC",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-signing-key-file=" + filepath.Join(pkiDir, "sa.key"),
			"--service-account-key-file=" + filepath.Join(pkiDir, "sa.pub"),
			"--service-cluster-ip-range=" + ServiceCIDR,
			"--allow-privileged=true",
			// The advertise address is loopback, which the default
			// endpoint reconciler refuses (and logs about forever).
			"--endpoint-reconciler-type=none",
			"--profiling=false",
		}, o.ExtraAPIServerArgs...),
	}

	t0 := time.Now()
	if err := e.etcd.start(); err != nil {
		return nil, err
	}
	if err := e.waitEtcd(ctx); err != nil {
		return nil, err
	}
	o.Logf("etcd (pid %d) healthy on %s in %s", e.etcd.pid(), e.etcdURL, time.Since(t0).Round(time.Millisecond))

	if err := e.writeKubeconfig(); err != nil {
		return nil, err
	}
	e.mu.Lock()
	err = e.startAPIServer(ctx)
	e.mu.Unlock()
	if err != nil {
		return nil, err
	}
	// The bootstrap controller creates "default" asynchronously; tests
	// expect it, and a pod needs its ServiceAccount.
	if err := e.waitDefaultNamespace(ctx); err != nil {
		return nil, err
	}
	if err := e.ensureServiceAccount(ctx, metav1.NamespaceDefault); err != nil {
		return nil, err
	}
	o.Logf("control plane ready at %s in %s (dir %s)", e.host, time.Since(begin).Round(time.Millisecond), dir)
	return e, nil
}

// RepoRoot returns the repository root (the directory holding tools/k8sbin).
func RepoRoot() (string, error) {
	marker := filepath.Join("tools", "k8sbin", "VERSION")
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, marker)); err == nil {
				return d, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		d := filepath.Join(filepath.Dir(file), "..", "..")
		if _, err := os.Stat(filepath.Join(d, marker)); err == nil {
			return filepath.Clean(d), nil
		}
	}
	return "", fmt.Errorf("cannot find the repository root (no %s above the working directory)", marker)
}

// Version returns the pinned Kubernetes version from tools/k8sbin/VERSION.
func Version() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(root, "tools", "k8sbin", "VERSION"))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// BinDir returns <cache>/<version>/bin, where build.sh puts binaries.
func BinDir() (string, error) {
	v, err := Version()
	if err != nil {
		return "", err
	}
	cache := os.Getenv(EnvCache)
	if cache == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", err
		}
		cache = filepath.Join(root, ".cache", "k8s")
	}
	return filepath.Join(cache, v, "bin"), nil
}

// APIServerBinary returns the kube-apiserver to run: $KUBESHAPER_KUBE_APISERVER
// if set, else the cached build, running tools/k8sbin/build.sh first if the
// cache is empty. logf may be nil.
func APIServerBinary(ctx context.Context, logf func(string, ...any)) (string, error) {
	if p := os.Getenv(EnvAPIServer); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s: %w", EnvAPIServer, err)
		}
		return p, nil
	}
	return ComponentBinary(ctx, "kube-apiserver", logf)
}

// ComponentBinary returns the cached binary of a Kubernetes component
// (kube-apiserver, kubectl, kubelet, ...), building it with
// tools/k8sbin/build.sh if it is not cached yet. logf may be nil.
func ComponentBinary(ctx context.Context, component string, logf func(string, ...any)) (string, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	binDir, err := BinDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(binDir, component)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, "tools", "k8sbin", "build.sh")
	msg := fmt.Sprintf("%s not cached at %s: building it with %s (kube-apiserver: ~2.5 min cold on an idle 2-core machine, 9+ min under load; beware go test's default 10m -timeout, or run the script before go test)", component, bin, script)
	logf("%s", msg)
	fmt.Fprintln(os.Stderr, "kubeenv: "+msg)
	t0 := time.Now()
	cmd := exec.CommandContext(ctx, "bash", script, component)
	cmd.Dir = root
	var out strings.Builder
	cmd.Stdout = io.MultiWriter(os.Stderr, &out)
	cmd.Stderr = io.MultiWriter(os.Stderr, &out)
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", script, component, err, lastLines(out.String(), 30))
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s ran but %s is missing: %w", script, bin, err)
	}
	logf("built %s in %s", component, time.Since(t0).Round(time.Second))
	return bin, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. All listeners
// are held open until every port is chosen.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (e *Env) waitEtcd(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	return poll(ctx, e.opts.ReadyTimeout, e.etcd, "etcd /health", func() (bool, string) {
		resp, err := client.Get(e.etcdURL + "/health")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && strings.Contains(string(b), `"true"`), string(b)
	})
}

func (e *Env) httpClient() (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(e.caPEM) {
		return nil, errors.New("bad CA PEM")
	}
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}, nil
}

func (e *Env) waitAPIServer(ctx context.Context) error {
	client, err := e.httpClient()
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	get := func(path string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.host+path, nil)
		if err != nil {
			return 0, "", err
		}
		req.Header.Set("Authorization", "Bearer "+e.token)
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	err = poll(ctx, e.opts.ReadyTimeout, e.apiserver, "kube-apiserver /readyz", func() (bool, string) {
		code, body, err := get("/readyz")
		if err != nil {
			return false, err.Error()
		}
		return code == http.StatusOK, fmt.Sprintf("HTTP %d %s", code, body)
	})
	if err != nil {
		if code, body, gerr := get("/readyz?verbose"); gerr == nil {
			err = fmt.Errorf("%w\n/readyz?verbose (HTTP %d):\n%s", err, code, lastLines(body, 40))
		}
	}
	return err
}

// poll calls check every 100ms until it returns true, p exits, ctx ends or
// timeout passes.
func poll(ctx context.Context, timeout time.Duration, p *proc, what string, check func() (bool, string)) error {
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, detail := check()
		if ok {
			return nil
		}
		last = detail
		if err := p.exited(); err != nil {
			return fmt.Errorf("waiting for %s: %w; last check: %s", what, err, last)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s; last check: %s", what, timeout, last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w; last check: %s", what, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (e *Env) waitDefaultNamespace(ctx context.Context) error {
	cs := e.Clientset()
	deadline := time.Now().Add(e.opts.ReadyTimeout)
	for {
		_, err := cs.CoreV1().Namespaces().Get(ctx, metav1.NamespaceDefault, metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("namespace default did not appear: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (e *Env) ensureServiceAccount(ctx context.Context, ns string) error {
	_, err := e.Clientset().CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create serviceaccount %s/default: %w", ns, err)
	}
	return nil
}

func (e *Env) writeKubeconfig() error {
	e.kubeconfig = filepath.Join(e.dir, "kubeconfig")
	return e.WriteKubeconfigFor(e.kubeconfig, e.host)
}

// WriteKubeconfigFor writes an admin kubeconfig that reaches this
// apiserver at server (https://IP:PORT), e.g. through a qemu guest's
// forward: it still verifies the certificate, as issued to 127.0.0.1
// (tls-server-name).
func (e *Env) WriteKubeconfigFor(path, server string) error {
	cfg := clientcmdapi.NewConfig()
	cl := &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: e.caPEM}
	if server != e.host {
		cl.TLSServerName = "127.0.0.1"
	}
	cfg.Clusters["kubeenv"] = cl
	cfg.AuthInfos[adminUser] = &clientcmdapi.AuthInfo{Token: e.token}
	cfg.Contexts["kubeenv"] = &clientcmdapi.Context{Cluster: "kubeenv", AuthInfo: adminUser, Namespace: metav1.NamespaceDefault}
	cfg.CurrentContext = "kubeenv"
	return clientcmd.WriteToFile(*cfg, path)
}

// Attach returns an Env for a control plane another process started, from
// its admin kubeconfig (WriteKubeconfigFor's): the API helpers
// (CreateNode, CreatePodWithIPs, Clientset…) work; the control plane's
// processes, logs and Stop are the other process's (Stop does nothing).
func Attach(kubeconfig string) (*Env, error) {
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("attach: %w", err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil || cfg.Clusters[ctx.Cluster] == nil || cfg.AuthInfos[ctx.AuthInfo] == nil {
		return nil, fmt.Errorf("attach: %s: no current context with a cluster and user", kubeconfig)
	}
	cl, user := cfg.Clusters[ctx.Cluster], cfg.AuthInfos[ctx.AuthInfo]
	return &Env{
		opts:       Options{Logf: func(string, ...any) {}},
		token:      user.Token,
		caPEM:      cl.CertificateAuthorityData,
		host:       cl.Server,
		serverName: cl.TLSServerName,
		kubeconfig: kubeconfig,
		stopped:    true,
		podSeq:     map[string]int{},
	}, nil
}

// StartAPIServer (re)starts kube-apiserver on the same port against the same
// etcd and waits for /readyz. Use it after StopAPIServer to end a simulated
// API outage.
func (e *Env) StartAPIServer(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.startAPIServer(ctx); err != nil {
		return fmt.Errorf("%w\nkube-apiserver log (%s) tail:\n%s", err, e.apiserver.logPath, tailFile(e.apiserver.logPath, 40))
	}
	return nil
}

// startAPIServer needs e.mu held.
func (e *Env) startAPIServer(ctx context.Context) error {
	if e.stopped {
		return errors.New("kubeenv: environment is stopped")
	}
	if e.apiserver.running() {
		return errors.New("kubeenv: kube-apiserver is already running")
	}
	t0 := time.Now()
	if err := e.apiserver.start(); err != nil {
		return err
	}
	if err := e.waitAPIServer(ctx); err != nil {
		if serr := e.apiserver.stop(15 * time.Second); serr != nil {
			err = errors.Join(err, serr)
		}
		return err
	}
	e.opts.Logf("kube-apiserver (pid %d) ready on %s in %s", e.apiserver.pid(), e.host, time.Since(t0).Round(time.Millisecond))
	return nil
}

// StopAPIServer stops kube-apiserver (SIGTERM, then SIGKILL after 15s) and
// leaves etcd running, to simulate an API outage. Clients see connection
// refused until StartAPIServer.
func (e *Env) StopAPIServer() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	t0 := time.Now()
	pid := e.apiserver.pid()
	if err := e.apiserver.stop(15 * time.Second); err != nil {
		return err
	}
	e.opts.Logf("kube-apiserver (pid %d) stopped in %s", pid, time.Since(t0).Round(time.Millisecond))
	return nil
}

// APIServerRunning reports whether kube-apiserver is currently running.
func (e *Env) APIServerRunning() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.apiserver.running()
}

// Stop stops kube-apiserver and etcd by PID (SIGTERM, then SIGKILL) and
// removes the temporary directory. It is safe to call more than once.
func (e *Env) Stop() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return nil
	}
	e.stopped = true
	t0 := time.Now()
	defer func() {
		e.opts.Logf("stopped in %s", time.Since(t0).Round(time.Millisecond))
	}()
	var errs []error
	if e.apiserver != nil {
		errs = append(errs, e.apiserver.stop(15*time.Second))
	}
	if e.etcd != nil {
		errs = append(errs, e.etcd.stop(10*time.Second))
	}
	if os.Getenv("KUBEENV_KEEP") != "" {
		e.opts.Logf("KUBEENV_KEEP set: leaving %s", e.dir)
	} else {
		errs = append(errs, os.RemoveAll(e.dir))
	}
	return errors.Join(errs...)
}

// RESTConfig returns a fresh copy of an admin (system:masters) rest.Config
// that verifies the apiserver's certificate.
func (e *Env) RESTConfig() *rest.Config {
	return &rest.Config{
		Host:            e.host,
		BearerToken:     e.token,
		TLSClientConfig: rest.TLSClientConfig{CAData: append([]byte(nil), e.caPEM...), ServerName: e.serverName},
		QPS:             200,
		Burst:           400,
		Timeout:         30 * time.Second,
	}
}

// Clientset returns a shared admin clientset.
func (e *Env) Clientset() kubernetes.Interface {
	e.csMu.Lock()
	defer e.csMu.Unlock()
	if e.clientset == nil {
		e.clientset = kubernetes.NewForConfigOrDie(e.RESTConfig())
	}
	return e.clientset
}

// KubeconfigPath returns the path of an admin kubeconfig for this
// environment (CA and token embedded).
func (e *Env) KubeconfigPath() string { return e.kubeconfig }

// Host returns the apiserver URL, https://127.0.0.1:<port>.
func (e *Env) Host() string { return e.host }

// Token returns the admin bearer token (group system:masters).
func (e *Env) Token() string { return e.token }

// CAPEM returns the PEM CA certificate that signed the apiserver's cert.
func (e *Env) CAPEM() []byte { return append([]byte(nil), e.caPEM...) }

// EtcdURL returns etcd's client URL.
func (e *Env) EtcdURL() string { return e.etcdURL }

// Dir returns the temporary directory holding data, certificates and logs.
func (e *Env) Dir() string { return e.dir }

// APIServerLogPath and EtcdLogPath return the processes' log files.
func (e *Env) APIServerLogPath() string { return filepath.Join(e.dir, "kube-apiserver.log") }

// EtcdLogPath returns etcd's log file.
func (e *Env) EtcdLogPath() string { return filepath.Join(e.dir, "etcd.log") }

// LogTails returns the last n lines of both logs, for failure reports.
func (e *Env) LogTails(n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "----- kube-apiserver log tail (%s) -----\n%s\n", e.APIServerLogPath(), tailFile(e.APIServerLogPath(), n))
	fmt.Fprintf(&b, "----- etcd log tail (%s) -----\n%s\n", e.EtcdLogPath(), tailFile(e.EtcdLogPath(), n))
	return b.String()
}
