package deptest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// TestLinksStayInRepository fails when a file of the repository refers to a file a clone does not
// have: any mention of the sibling folder the design once lived in, a Markdown link ([text](path),
// ![alt](path), [label]: path) whose path is not in the repository or climbs out of it, or the name
// of a Markdown file ("see the design notes in X" in a comment) that no file in the repository has.
// The architecture lives in docs/architecture.md; link that, or the DESIGN.md beside the code.
func TestLinksStayInRepository(t *testing.T) {
	root, files := repoFiles(t)
	contents := make(map[string][]byte, len(files))
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f)))
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted in the work tree, not yet in the index
		} else if err != nil {
			t.Fatal(err)
		}
		contents[f] = b
	}
	for _, p := range checkLinks(contents) {
		t.Error(p)
	}
}

// TestCheckLinksFindsEachKind: the checker reports every kind of reference that leaves the
// repository, and none that stays in it. (The names are built by concatenation so that this file
// does not itself hold what TestLinksStayInRepository refuses.)
func TestCheckLinksFindsEachKind(t *testing.T) {
	md := ".md"
	shared := ".." + "/shared/"
	files := map[string][]byte{
		"README" + md: []byte("# R\n" +
			"[ok](docs/a" + md + "#anchor) [dir](pkg/) [web](https://example.com/x" + md + ") [top](#r)\n" +
			"[gone](docs/missing" + md + ")\n" +
			"[out](" + shared + "DESIGN" + md + ")\n" +
			"```\n[in a code block](nowhere" + md + ")\n```\n" +
			"`[in a code span](nowhere" + md + ")`\n" +
			"[ref]: docs/absent" + md + "\n"),
		"docs/a" + md:     []byte("[back](../README" + md + ") [up and out](../../x" + md + ") [sibling](b" + md + ")\n"),
		"pkg/doc.go":      []byte("// See DESIGN" + md + " here, docs/a" + md + ", and NOTES" + md + ".\n// " + shared + "PEERS" + md + "\npackage pkg\n"),
		"pkg/DESIGN" + md: []byte("beside the code\n"),
	}
	got := checkLinks(files)
	want := []string{
		"README" + md + ":3: link docs/missing" + md,
		"README" + md + ":4: refers to " + shared,
		"README" + md + ":4: link " + shared + "DESIGN" + md,
		"README" + md + ":8: names nowhere" + md, // a code span is no link, but still names a file
		"README" + md + ":9: link docs/absent" + md,
		"docs/a" + md + ":1: link ../../x" + md,
		"docs/a" + md + ":1: link b" + md,
		"pkg/doc.go:1: names NOTES" + md,
		"pkg/doc.go:2: refers to " + shared,
		"pkg/doc.go:2: names " + shared + "PEERS" + md,
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			if strings.HasPrefix(g, w) {
				found = true
			}
		}
		if !found {
			t.Errorf("not reported: %s", w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("reported %d problems, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
}

// repoFiles returns the module root and the files git knows there (tracked, or new and not
// ignored), as slash-separated paths relative to the root.
func repoFiles(t *testing.T) (string, []string) {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	root := strings.TrimSpace(string(out))
	cmd := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	out, err = cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%v: %s", err, ee.Stderr)
		}
		t.Fatalf("listing the repository's files needs git and a git checkout: %v", err)
	}
	var files []string
	for _, f := range strings.Split(string(out), "\x00") {
		if f != "" {
			files = append(files, f)
		}
	}
	if len(files) == 0 {
		t.Fatal("git ls-files found no files")
	}
	return root, files
}

var (
	// mdLink is an inline link or image: [text](target) or [text](target "title").
	mdLink = regexp.MustCompile(`!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)`)
	// mdRef is a reference definition: [label]: target.
	mdRef = regexp.MustCompile(`^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)`)
	// codeSpan is inline code, whose brackets are not links.
	codeSpan = regexp.MustCompile("`[^`]*`")
	// mdName is a mention of a Markdown file by name or path, in any file.
	mdName = regexp.MustCompile(`[A-Za-z0-9_./-]*[A-Za-z0-9_-]\.md\b`)
	// url is anything with a scheme: mentions of files elsewhere on the web are fine.
	url = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://\S+`)
	// scheme marks a link target that is not a path in the repository (https:, mailto:).
	scheme = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)
)

// checkLinks returns one line per reference, in files (path → contents), to something that is not
// among files. Directories count as present when a file lies below them.
func checkLinks(files map[string][]byte) []string {
	present := map[string]bool{".": true}
	bases := map[string]bool{}
	for f := range files {
		present[f] = true
		bases[path.Base(f)] = true
		for d := path.Dir(f); d != "."; d = path.Dir(d) {
			present[d] = true
		}
	}
	// resolve reports whether target, seen in a file of folder dir, names something present:
	// relative to dir, or (for the prose mentions, where "docs/api.md" means the root's) to the
	// root.
	resolve := func(dir, target string, fromRoot bool) bool {
		p := path.Clean(path.Join(dir, target))
		if strings.HasPrefix(target, "/") {
			p = path.Clean(strings.TrimPrefix(target, "/"))
		}
		if p != ".." && !strings.HasPrefix(p, "../") && present[p] {
			return true
		}
		return fromRoot && !strings.HasPrefix(target, "..") && present[path.Clean(target)]
	}

	shared := ".." + "/shared/"
	var problems []string
	names := make([]string, 0, len(files))
	for f := range files {
		names = append(names, f)
	}
	sort.Strings(names)
	for _, f := range names {
		b := files[f]
		if bytes.IndexByte(b[:min(len(b), 8000)], 0) >= 0 {
			continue // binary
		}
		dir := path.Dir(f)
		isMD := strings.HasSuffix(f, ".md")
		// Tests and their testdata name made-up documents on purpose (internal/docstest runs its
		// checker on docs/broken.md): there only ../shared and links count, not mentions.
		fixtures := strings.HasSuffix(f, "_test.go") || strings.Contains("/"+f, "/testdata/")
		fenced := false
		for i, line := range strings.Split(string(b), "\n") {
			at := fmt.Sprintf("%s:%d: ", f, i+1)
			if strings.Contains(line, shared) {
				problems = append(problems, at+"refers to "+shared+", which a clone does not have; link docs/architecture.md")
			}
			if isMD && strings.HasPrefix(strings.TrimSpace(line), "```") {
				fenced = !fenced
				continue
			}
			linked := map[string]bool{} // link targets of this line, checked as links
			if isMD && !fenced {
				var targets []string
				for _, m := range mdLink.FindAllStringSubmatch(codeSpan.ReplaceAllString(line, ""), -1) {
					targets = append(targets, m[1])
				}
				if m := mdRef.FindStringSubmatch(line); m != nil {
					targets = append(targets, m[1])
				}
				for _, target := range targets {
					p, _, _ := strings.Cut(target, "#")
					p, _, _ = strings.Cut(p, "?")
					linked[p] = true
					if p == "" || scheme.MatchString(p) {
						continue // an anchor in this file, or a URL
					}
					if !resolve(dir, p, false) {
						problems = append(problems, at+"link "+target+" names no file of the repository")
					}
				}
			}
			if (isMD && fenced) || fixtures {
				continue
			}
			for _, name := range mdName.FindAllString(url.ReplaceAllString(line, " "), -1) {
				if linked[name] || resolve(dir, name, true) || (!strings.Contains(name, "/") && bases[name]) {
					continue
				}
				problems = append(problems, at+"names "+name+", which is not in the repository")
			}
		}
	}
	return problems
}
