package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeChart makes a chart folder from path -> content.
func writeChart(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if _, ok := files["Chart.yaml"]; !ok {
		files["Chart.yaml"] = "apiVersion: v2\nname: demo\nversion: 1.2.3\nappVersion: \"4.5\"\n"
	}
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// render renders the chart with user values files given as YAML text.
func render(t *testing.T, dir string, userValues ...string) (string, error) {
	t.Helper()
	var paths []string
	for i, text := range userValues {
		path := filepath.Join(t.TempDir(), "values"+string(rune('a'+i))+".yaml")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, path)
	}
	chart, err := LoadChart(dir)
	if err != nil {
		return "", err
	}
	user, err := MergeValueFiles(paths)
	if err != nil {
		return "", err
	}
	values := CoalesceValues(chart.Values, user)
	if err := ValidateValues(chart, values); err != nil {
		return "", err
	}
	engine, err := NewEngine(chart, values, "rel", "ns", "v1.32.0", nil)
	if err != nil {
		return "", err
	}
	rendered, err := engine.Render(false)
	if err != nil {
		return "", err
	}
	return Manifests(rendered)
}

func mustRender(t *testing.T, dir string, userValues ...string) string {
	t.Helper()
	out, err := render(t, dir, userValues...)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return out
}

func wantContains(t *testing.T, got string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

func TestIncludeWithNindentRendersNamedTemplates(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"values.yaml":            "labels:\n  a: \"1\"\n  b: x\n",
		"templates/_helpers.tpl": `{{- define "demo.labels" -}}{{ toYaml .Values.labels }}{{- end -}}`,
		"templates/cm.yaml":      "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  labels:\n    {{- include \"demo.labels\" . | nindent 4 }}\n",
	})
	wantContains(t, mustRender(t, dir), "  labels:\n    a: \"1\"\n    b: x\n", "# Source: demo/templates/cm.yaml")
}

func TestTplRendersAValueAsATemplate(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"values.yaml":       "host: \"{{ .Release.Name }}-svc.{{ .Release.Namespace }}\"\n",
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  host: {{ tpl .Values.host . | quote }}\n",
	})
	wantContains(t, mustRender(t, dir), `host: "rel-svc.ns"`)
}

func TestRequiredFailsWithItsMessage(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"templates/cm.yaml": "x: {{ required \"image.tag is required\" .Values.image }}\n",
	})
	_, err := render(t, dir)
	if err == nil || err.Error() != "execution error at (demo/templates/cm.yaml:1:6): image.tag is required" {
		t.Fatalf("want Helm's message for required, got %v", err)
	}
	wantContains(t, mustRender(t, dir, "image: v1\n"), "x: v1")
}

func TestFailStopsRendering(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"templates/cm.yaml": "{{ if gt (int .Values.count) 2 }}{{ fail \"count must be at most 2\" }}{{ end }}x: 1\n",
	})
	if _, err := render(t, dir, "count: 3\n"); err == nil || !strings.Contains(err.Error(), "count must be at most 2") {
		t.Fatalf("want the fail message, got %v", err)
	}
}

func TestUserNullDeletesADefaultAndMapsMerge(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"values.yaml":       "a:\n  keep: 1\n  drop: 2\n  deep:\n    x: 1\n",
		"templates/cm.yaml": "v: {{ toJson .Values.a }}\n",
	})
	wantContains(t, mustRender(t, dir, "a:\n  drop: null\n  deep:\n    z: 2\n"), `v: {"deep":{"x":1,"z":2},"keep":1}`)
}

func TestLaterValuesFilesWinAndListsAreReplaced(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"values.yaml":       "list: [1, 2, 3]\nname: a\n",
		"templates/cm.yaml": "v: {{ toJson .Values }}\n",
	})
	wantContains(t, mustRender(t, dir, "name: b\nlist: [9]\n", "name: c\n"), `v: {"list":[9],"name":"c"}`)
}

func TestNumbersPrintAsHelmPrintsThem(t *testing.T) {
	// Helm reads values through JSON, so every number is a float64.
	dir := writeChart(t, map[string]string{
		"values.yaml":       "small: 2\nbig: 1000000\n",
		"templates/cm.yaml": "s: {{ .Values.small }}\nb: {{ .Values.big }}\ni: {{ int .Values.big }}\nm: {{ mul .Values.small 3 }}\n",
	})
	wantContains(t, mustRender(t, dir), "s: 2\n", "b: 1e+06\n", "i: 1000000\n", "m: 6\n")
}

func TestMissingKeysRenderAsNothing(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"values.yaml":       "present: {}\n",
		"templates/cm.yaml": "a: \"{{ .Values.present.absent }}\"\nb: \"{{ .Values.absent }}\"\n",
	})
	wantContains(t, mustRender(t, dir), "a: \"\"\nb: \"\"")
}

func TestValuesKeysFollowYaml11AsInHelm(t *testing.T) {
	// sigs.k8s.io/yaml (YAML 1.1) reads the key y as true; Helm does the same.
	dir := writeChart(t, map[string]string{"templates/cm.yaml": "v: {{ toJson .Values }}\n"})
	wantContains(t, mustRender(t, dir, "y: 1\n"), `v: {"true":1}`)
}

func TestBuiltInObjects(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"files/greeting.txt": "hello\nworld\n",
		"templates/cm.yaml": "chart: {{ .Chart.Name }}-{{ .Chart.Version }}-{{ .Chart.AppVersion }}\n" +
			"release: {{ .Release.Name }}/{{ .Release.Namespace }}/{{ .Release.Service }}/{{ .Release.IsInstall }}\n" +
			"kube: {{ .Capabilities.KubeVersion.Minor }}\n" +
			"template: {{ .Template.Name }}\n" +
			"file: {{ .Files.Get \"files/greeting.txt\" | nindent 2 }}\n" +
			"lines: {{ len (.Files.Lines \"files/greeting.txt\") }}\n",
	})
	wantContains(t, mustRender(t, dir), "chart: demo-1.2.3-4.5", "release: rel/ns/Helm/true", "kube: 32",
		"template: demo/templates/cm.yaml", "file: \n  hello\n  world", "lines: 2")
}

func TestPartialsAndNotesAreNotManifests(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"templates/_x.yaml":   "kind: Partial\n",
		"templates/NOTES.txt": "Call {{ .Release.Name }}\n",
		"templates/a.yaml":    "kind: A\n",
	})
	out := mustRender(t, dir)
	if strings.Contains(out, "Partial") || strings.Contains(out, "Call") {
		t.Fatalf("partials and NOTES.txt must not be rendered as manifests:\n%s", out)
	}
	chart, _ := LoadChart(dir)
	engine, _ := NewEngine(chart, chart.Values, "rel", "ns", "v1.32.0", nil)
	notes, err := engine.Render(true)
	if err != nil || len(notes) != 1 || notes[0].Content != "Call rel\n" {
		t.Fatalf("notes: %v %+v", err, notes)
	}
}

func TestInvalidYamlOutputIsAnError(t *testing.T) {
	dir := writeChart(t, map[string]string{"templates/a.yaml": "a: [1, 2\n"})
	if _, err := render(t, dir); err == nil || !strings.Contains(err.Error(), "YAML parse error on demo/templates/a.yaml") {
		t.Fatalf("want a YAML parse error, got %v", err)
	}
}

func TestSchemaRejectsValuesWithHelmsMessage(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"values.yaml":        "replicas: 1\n",
		"values.schema.json": `{"type":"object","properties":{"replicas":{"type":"integer","minimum":1}},"additionalProperties":false}`,
		"templates/a.yaml":   "r: {{ .Values.replicas }}\n",
	})
	_, err := render(t, dir, "replicas: 0\nextra: 1\n")
	if err == nil {
		t.Fatal("values outside the schema were accepted")
	}
	wantContains(t, err.Error(), "values don't meet the specifications of the schema(s) in the following chart(s):\ndemo:",
		"- replicas: Must be greater than or equal to 1", "Additional property extra is not allowed")
	wantContains(t, mustRender(t, dir, "replicas: 3\n"), "r: 3")
}
