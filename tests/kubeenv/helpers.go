package kubeenv

import (
	"context"
	"fmt"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
)

// Objects made by these helpers never run anything: there is no kubelet,
// scheduler or controller-manager. Status is written through the status
// subresource, exactly as a kubelet would.

// DummyImage is the container image of pods made by CreatePod. It is never
// pulled.
const DummyImage = "kubeenv-dummy:never-pulled"

// CreateNamespace creates a namespace and its "default" ServiceAccount (which
// the ServiceAccount admission plugin requires before pods can be created;
// there is no controller-manager to create it).
func (e *Env) CreateNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	ns, err := e.Clientset().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", name, err)
	}
	if err := e.ensureServiceAccount(ctx, name); err != nil {
		return nil, err
	}
	return ns, nil
}

// CreateNode creates a Node with a per-node /24 pod CIDR out of PodCIDR
// (10.244.<n>.0/24), an InternalIP of 10.0.0.<n+10>, the usual
// kubernetes.io/hostname and kubernetes.io/os labels, and a Ready condition.
func (e *Env) CreateNode(ctx context.Context, name string) (*corev1.Node, error) {
	e.ipMu.Lock()
	n := e.nodeSeq
	e.nodeSeq++
	e.ipMu.Unlock()
	if n > 240 {
		return nil, fmt.Errorf("create node %s: CreateNode supports at most 241 nodes", name)
	}
	podCIDR := fmt.Sprintf("10.244.%d.0/24", n)
	internalIP := fmt.Sprintf("10.0.0.%d", n+10)

	cs := e.Clientset()
	node, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				"kubernetes.io/hostname": name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
			},
		},
		Spec: corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create node %s: %w", name, err)
	}
	now := metav1.Now()
	node.Status = corev1.NodeStatus{
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: internalIP},
			{Type: corev1.NodeHostName, Address: name},
		},
		Conditions: []corev1.NodeCondition{{
			Type:               corev1.NodeReady,
			Status:             corev1.ConditionTrue,
			Reason:             "KubeletReady",
			Message:            "kubeenv: fake node, no kubelet",
			LastHeartbeatTime:  now,
			LastTransitionTime: now,
		}},
		// A node configured for 512 pods (the kubelet's --max-pods): the
		// agent sizes its maps from Allocatable (tests go to 250 pods).
		Capacity:    corev1.ResourceList{corev1.ResourcePods: resource.MustParse("512")},
		Allocatable: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("512")},
		NodeInfo:    corev1.NodeSystemInfo{OperatingSystem: "linux", Architecture: "amd64"},
	}
	node, err = cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("update node %s status: %w", name, err)
	}
	return node, nil
}

// CreatePod is CreatePodWithIPs with an automatically chosen pod IP: the next
// free address in the node's pod CIDR if the node exists and has one, else in
// 10.244.255.0/24.
func (e *Env) CreatePod(ctx context.Context, ns, name, nodeName string, annotations, labels map[string]string) (*corev1.Pod, error) {
	ip, err := e.nextPodIP(ctx, nodeName)
	if err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", ns, name, err)
	}
	return e.CreatePodWithIPs(ctx, ns, name, nodeName, []string{ip}, annotations, labels)
}

// CreatePodWithIPs creates a Pod bound to nodeName (spec.nodeName, no
// scheduler involved) with one container running DummyImage, then writes its
// status as a kubelet would: phase Running, PodIP/PodIPs = podIPs, HostIP =
// the node's InternalIP (if the node exists), all conditions True, container
// ready and running.
//
// The pod has terminationGracePeriodSeconds 0, so an ordinary delete removes
// it at once (with no kubelet, a graceful delete would leave it Terminating
// forever).
func (e *Env) CreatePodWithIPs(ctx context.Context, ns, name, nodeName string, podIPs []string, annotations, labels map[string]string) (*corev1.Pod, error) {
	cs := e.Clientset()
	if err := e.ensureServiceAccount(ctx, ns); err != nil {
		return nil, err
	}
	zero := int64(0)
	no := false
	pod, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   ns,
			Labels:      labels,
			Annotations: annotations,
		},
		Spec: corev1.PodSpec{
			NodeName:                      nodeName,
			TerminationGracePeriodSeconds: &zero,
			AutomountServiceAccountToken:  &no,
			Containers: []corev1.Container{{
				Name:            "app",
				Image:           DummyImage,
				ImagePullPolicy: corev1.PullNever,
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", ns, name, err)
	}

	hostIP := ""
	if nodeName != "" {
		if node, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{}); err == nil {
			for _, a := range node.Status.Addresses {
				if a.Type == corev1.NodeInternalIP {
					hostIP = a.Address
					break
				}
			}
		}
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	pod.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		StartTime: &now,
		QOSClass:  corev1.PodQOSBestEffort,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name:    "app",
			Image:   DummyImage,
			Ready:   true,
			Started: &[]bool{true}[0],
			State:   corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}},
	}
	if hostIP != "" {
		pod.Status.HostIP = hostIP
		pod.Status.HostIPs = []corev1.HostIP{{IP: hostIP}}
	}
	setPodIPs(pod, podIPs)
	pod, err = cs.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("update pod %s/%s status: %w", ns, name, err)
	}
	return pod, nil
}

// SetPodIP replaces a pod's status.podIP / status.podIPs (podIPs[0] is the
// primary). With no IPs it clears them.
func (e *Env) SetPodIP(ctx context.Context, ns, name string, podIPs ...string) (*corev1.Pod, error) {
	pods := e.Clientset().CoreV1().Pods(ns)
	var out *corev1.Pod
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		setPodIPs(pod, podIPs)
		out, err = pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("set pod %s/%s IPs %v: %w", ns, name, podIPs, err)
	}
	return out, nil
}

func setPodIPs(pod *corev1.Pod, podIPs []string) {
	pod.Status.PodIP = ""
	pod.Status.PodIPs = nil
	for i, ip := range podIPs {
		if i == 0 {
			pod.Status.PodIP = ip
		}
		pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: ip})
	}
}

// CreateService creates a ClusterIP Service (port 80/TCP "http" -> target
// port 8080) with the given selector and annotations; the apiserver
// allocates its ClusterIP from ServiceCIDR. No Endpoints or EndpointSlices
// are made: there is no controller-manager.
func (e *Env) CreateService(ctx context.Context, ns, name string, selector, annotations map[string]string) (*corev1.Service, error) {
	svc, err := e.Clientset().CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: annotations},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: selector,
			Ports: []corev1.ServicePort{{
				Name:       "http",
				Protocol:   corev1.ProtocolTCP,
				Port:       80,
				TargetPort: intstr.FromInt32(8080),
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create service %s/%s: %w", ns, name, err)
	}
	return svc, nil
}

// nextPodIP picks the next address in nodeName's pod CIDR (from .2 up), or
// in 10.244.255.0/24 when the node is unknown or has no CIDR.
func (e *Env) nextPodIP(ctx context.Context, nodeName string) (string, error) {
	cidr := "10.244.255.0/24"
	if nodeName != "" {
		node, err := e.Clientset().CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err == nil && node.Spec.PodCIDR != "" {
			cidr = node.Spec.PodCIDR
		}
	}
	_, ipnet, err := net.ParseCIDR(cidr)
	if err != nil {
		return "", fmt.Errorf("node %s pod CIDR %q: %w", nodeName, cidr, err)
	}
	base := ipnet.IP.To4()
	ones, bits := ipnet.Mask.Size()
	if base == nil || bits != 32 || ones > 24 {
		return "", fmt.Errorf("node %s pod CIDR %q: want an IPv4 /24 or larger", nodeName, cidr)
	}
	e.ipMu.Lock()
	n := e.podSeq[cidr]
	e.podSeq[cidr] = n + 1
	e.ipMu.Unlock()
	if n >= 253 {
		return "", fmt.Errorf("pod CIDR %s: out of automatic pod IPs (use CreatePodWithIPs)", cidr)
	}
	ip := make(net.IP, 4)
	copy(ip, base)
	ip[3] = byte(n + 2)
	return ip.String(), nil
}
