// helmrender renders a Helm chart folder the way `helm template` does, for
// machines without the helm binary (Debian has none): Helm's template
// functions and objects on Go's text/template with sprig, values coalesced
// as Helm coalesces them, and values.schema.json enforced with the library
// Helm uses. It covers what Strata's chart needs; sub-charts, .helmignore
// and hooks are not supported.
//
//	helmrender --chart DIR [-f values.yaml]... [--release NAME] [--namespace NS]
//	           [--kube-version v1.32.0] [--api-versions G/V]... [--notes] [--validate-only]
//
// Prints the manifests ("---\n# Source: ..." per document) or, with --notes,
// the rendered NOTES.txt. Exit status 1 with Helm's message on bad values
// or a template error.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

func main() {
	var valueFiles, apiVersions repeated
	chartDir := flag.String("chart", "", "chart folder (holds Chart.yaml)")
	flag.Var(&valueFiles, "f", "values file (repeatable; later files win)")
	flag.Var(&valueFiles, "values", "same as -f")
	releaseName := flag.String("release", "strata", "release name (.Release.Name)")
	namespace := flag.String("namespace", "default", "release namespace (.Release.Namespace)")
	kubeVersion := flag.String("kube-version", "v1.32.0", "Kubernetes version for .Capabilities")
	flag.Var(&apiVersions, "api-versions", "extra API version for .Capabilities.APIVersions (repeatable)")
	notes := flag.Bool("notes", false, "print the rendered NOTES.txt instead of the manifests")
	validateOnly := flag.Bool("validate-only", false, "only check the values against values.schema.json")
	flag.Parse()
	if *chartDir == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: helmrender --chart DIR [-f values.yaml]... [--release NAME] [--namespace NS] [--notes] [--validate-only]")
		os.Exit(2)
	}
	if err := run(*chartDir, valueFiles, *releaseName, *namespace, *kubeVersion, apiVersions, *notes, *validateOnly); err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		os.Exit(1)
	}
}

func run(chartDir string, valueFiles []string, releaseName, namespace, kubeVersion string,
	apiVersions []string, notes, validateOnly bool) error {
	chart, err := LoadChart(chartDir)
	if err != nil {
		return err
	}
	user, err := MergeValueFiles(valueFiles)
	if err != nil {
		return err
	}
	values := CoalesceValues(chart.Values, user)
	if err := ValidateValues(chart, values); err != nil {
		return err
	}
	if validateOnly {
		fmt.Printf("%s: values valid against values.schema.json\n", strings.Join(append([]string{"defaults"}, valueFiles...), " + "))
		return nil
	}
	engine, err := NewEngine(chart, values, releaseName, namespace, kubeVersion, apiVersions)
	if err != nil {
		return err
	}
	rendered, err := engine.Render(notes)
	if err != nil {
		return err
	}
	if notes {
		for _, r := range rendered {
			fmt.Print(r.Content)
		}
		return nil
	}
	manifests, err := Manifests(rendered)
	if err != nil {
		return err
	}
	fmt.Print(manifests)
	return nil
}

// NewEngine sets up .Release and .Capabilities the way `helm template` does
// for a first install.
func NewEngine(chart *Chart, values map[string]interface{}, releaseName, namespace,
	kubeVersion string, apiVersions []string) (*Engine, error) {
	version := strings.TrimPrefix(kubeVersion, "v")
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 2 {
		return nil, fmt.Errorf("--kube-version %q: want vMAJOR.MINOR[.PATCH]", kubeVersion)
	}
	builtin := []string{"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2",
		"networking.k8s.io/v1", "rbac.authorization.k8s.io/v1", "storage.k8s.io/v1"}
	return &Engine{
		chart:  chart,
		values: values,
		release: Release{Name: releaseName, Namespace: namespace, Revision: 1, IsInstall: true,
			Service: "Helm"},
		capabilities: Capabilities{
			KubeVersion: KubeVersion{Version: "v" + version, Major: parts[0], Minor: parts[1],
				GitVersion: "v" + version},
			APIVersions: append(VersionSet(builtin), apiVersions...),
		},
	}, nil
}
