package rules

import "testing"

func TestMerge(t *testing.T) {
	svcA := Policy{
		{Bandwidth: &Bandwidth{RateBitsPerSec: 1_000_000, Mode: ModeDrop}, Loss: &Loss{Kind: LossUniform, Percent: 1}},
		{Delay: &Delay{Delay: 5}},
	}
	svcB := Policy{
		{Bandwidth: &Bandwidth{RateBitsPerSec: 2_000_000, Mode: ModeDrop}, Delay: &Delay{Delay: 7}},
		{Delay: &Delay{Delay: 9}, Program: &Program{Name: "b", Params: []Param{{"X", "1"}}}},
	}
	pod := Policy{
		{Loss: &Loss{Kind: LossExponential, Threshold: 300}},
		{},
	}
	for _, tc := range []struct {
		name     string
		services []Policy
		pod      Policy
		want     Policy
	}{
		{name: "nothing", want: Policy{}},
		{name: "pod only", pod: pod, want: pod},
		{name: "one service applies to the pod", services: []Policy{svcA}, want: svcA},
		{
			name: "pod wins per kind and direction; kinds combine", services: []Policy{svcA}, pod: pod,
			want: Policy{
				{Bandwidth: svcA[Egress].Bandwidth, Loss: pod[Egress].Loss},
				{Delay: svcA[Ingress].Delay},
			},
		},
		{
			name: "first service wins, later ones fill gaps", services: []Policy{svcA, svcB}, pod: pod,
			want: Policy{
				{Bandwidth: svcA[Egress].Bandwidth, Loss: pod[Egress].Loss, Delay: svcB[Egress].Delay},
				{Delay: svcA[Ingress].Delay, Program: svcB[Ingress].Program},
			},
		},
		{
			name: "order of services matters", services: []Policy{svcB, svcA},
			want: Policy{
				{Bandwidth: svcB[Egress].Bandwidth, Loss: svcA[Egress].Loss, Delay: svcB[Egress].Delay},
				{Delay: svcB[Ingress].Delay, Program: svcB[Ingress].Program},
			},
		},
		{
			name: "pod's ingress rule does not hide a service's egress rule", services: []Policy{eg(uniform(5))},
			pod: ing(uniform(1)), want: Policy{uniform(5), uniform(1)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Merge(tc.services, tc.pod); !got.Equal(tc.want) {
				t.Errorf("Merge\n got  %v\n want %v", got, tc.want)
			}
		})
	}
}

func TestMergeSharesNothing(t *testing.T) {
	svc := both(prog("p", "X", "1"))
	pod := eg(bwp(8000, 0, ModeDrop))
	got := Merge([]Policy{svc}, pod)
	got[Egress].Program.Params[0].Value = "2"
	got[Egress].Bandwidth.RateBitsPerSec = 1
	if svc[Egress].Program.Params[0].Value != "1" || pod[Egress].Bandwidth.RateBitsPerSec != 8000 {
		t.Error("Merge result aliases its inputs")
	}
}
