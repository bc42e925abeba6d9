package main

// Loading a chart folder and its values the way Helm 3 does: Chart.yaml into
// chart metadata, values files parsed with sigs.k8s.io/yaml (so numbers are
// float64, as in Helm), several -f files merged in order, then coalesced
// with the chart's values.yaml (a null in user values deletes the default).

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// Metadata is the part of Chart.yaml that templates read as .Chart (Helm's
// chart.Metadata field names).
type Metadata struct {
	APIVersion  string            `json:"apiVersion"`
	Name        string            `json:"name"`
	Version     string            `json:"version"`
	AppVersion  string            `json:"appVersion,omitempty"`
	Description string            `json:"description,omitempty"`
	Type        string            `json:"type,omitempty"`
	KubeVersion string            `json:"kubeVersion,omitempty"`
	Home        string            `json:"home,omitempty"`
	Icon        string            `json:"icon,omitempty"`
	Keywords    []string          `json:"keywords,omitempty"`
	Sources     []string          `json:"sources,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Chart is a loaded chart folder.
type Chart struct {
	Metadata  Metadata
	Values    map[string]interface{} // values.yaml
	Schema    []byte                 // values.schema.json, nil when absent
	Templates map[string]string      // "templates/x.yaml" -> text
	Files     Files                  // every other file, by slash-separated path
}

// LoadChart reads a chart folder (not a packaged .tgz).
func LoadChart(dir string) (*Chart, error) {
	chart := &Chart{Templates: map[string]string{}, Files: Files{}}
	metadata, err := os.ReadFile(filepath.Join(dir, "Chart.yaml"))
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", dir, err)
	}
	if err := yaml.UnmarshalStrict(metadata, &chart.Metadata); err != nil {
		return nil, fmt.Errorf("%s/Chart.yaml: %w", dir, err)
	}
	switch {
	case chart.Metadata.APIVersion != "v2":
		return nil, fmt.Errorf("%s/Chart.yaml: apiVersion must be v2, got %q", dir, chart.Metadata.APIVersion)
	case chart.Metadata.Name == "":
		return nil, fmt.Errorf("%s/Chart.yaml: name is required", dir)
	case chart.Metadata.Version == "":
		return nil, fmt.Errorf("%s/Chart.yaml: version is required", dir)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "values.yaml")); err == nil {
		if chart.Values, err = ParseValues(data); err != nil {
			return nil, fmt.Errorf("%s/values.yaml: %w", dir, err)
		}
	} else {
		chart.Values = map[string]interface{}{}
	}
	if data, err := os.ReadFile(filepath.Join(dir, "values.schema.json")); err == nil {
		chart.Schema = data
	}
	err = filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		switch {
		case strings.HasPrefix(rel, "templates/"):
			chart.Templates[rel] = string(data)
		case rel == "Chart.yaml" || rel == "values.yaml" || rel == "values.schema.json":
		case strings.HasPrefix(rel, "charts/"):
			return fmt.Errorf("%s: sub-charts are not supported by this renderer", rel)
		default:
			chart.Files[rel] = data
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return chart, nil
}

// ParseValues parses one values document as Helm does (YAML through JSON).
func ParseValues(data []byte) (map[string]interface{}, error) {
	values := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &values); err != nil {
		return nil, err
	}
	if values == nil {
		values = map[string]interface{}{}
	}
	return values, nil
}

// MergeValueFiles merges user values files left to right (later wins, maps
// merge key by key, lists are replaced), as `helm -f a.yaml -f b.yaml`.
func MergeValueFiles(paths []string) (map[string]interface{}, error) {
	merged := map[string]interface{}{}
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		values, err := ParseValues(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		merged = mergeMaps(merged, values)
	}
	return merged, nil
}

func mergeMaps(a, b map[string]interface{}) map[string]interface{} {
	out := make(map[string]interface{}, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bm, ok := v.(map[string]interface{}); ok {
			if am, ok := out[k].(map[string]interface{}); ok {
				out[k] = mergeMaps(am, bm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// CoalesceValues lays user values over the chart defaults. A user null
// removes the key; maps merge recursively; anything else from the user wins.
func CoalesceValues(defaults, user map[string]interface{}) map[string]interface{} {
	out := deepCopy(user).(map[string]interface{})
	coalesceInto(out, defaults)
	return out
}

func coalesceInto(dst, src map[string]interface{}) {
	for key, def := range src {
		userValue, present := dst[key]
		switch {
		case !present:
			dst[key] = deepCopy(def)
		case userValue == nil:
			delete(dst, key) // the user removed this default
		default:
			if um, ok := userValue.(map[string]interface{}); ok {
				if dm, ok := def.(map[string]interface{}); ok {
					coalesceInto(um, dm)
				}
			}
		}
	}
	for key, value := range dst {
		if value == nil {
			delete(dst, key)
		}
	}
}

func deepCopy(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		out := make(map[string]interface{}, len(t))
		for k, val := range t {
			out[k] = deepCopy(val)
		}
		return out
	case []interface{}:
		out := make([]interface{}, len(t))
		for i, val := range t {
			out[i] = deepCopy(val)
		}
		return out
	default:
		return v
	}
}

// sortedTemplateNames: the order Helm parses templates in does not matter
// for one chart; a stable order makes the output reproducible.
func sortedTemplateNames(templates map[string]string) []string {
	names := make([]string, 0, len(templates))
	for name := range templates {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
