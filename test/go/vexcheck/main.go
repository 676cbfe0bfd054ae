// vexcheck reads OpenVEX documents with OpenVEX's own Go library (github.com/openvex/go-vex), so
// the tests can check that what Writ exports is a document that library accepts, and that it
// matches products to statements as Writ does.
//
//	vexcheck validate FILE                       the document's fields and every statement's rules; prints a JSON summary
//	vexcheck match FILE VULN PRODUCT [SUBCOMPONENT]  the status of the latest matching statement, or "none"
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/openvex/go-vex/pkg/vex"
)

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "vexcheck: "+format+"\n", a...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 3 {
		fail("usage: vexcheck validate FILE | vexcheck match FILE VULN PRODUCT [SUBCOMPONENT]")
	}
	doc, err := vex.Open(os.Args[2])
	if err != nil {
		fail("%s: %v", os.Args[2], err)
	}
	switch os.Args[1] {
	case "validate":
		if doc.Context == "" || doc.ID == "" || doc.Author == "" || doc.Timestamp == nil || doc.Version == 0 {
			fail("a document needs @context, @id, author, timestamp and version")
		}
		type stmt struct {
			Vulnerability string   `json:"vulnerability"`
			Status        string   `json:"status"`
			Products      []string `json:"products"`
		}
		out := struct {
			ID         string `json:"id"`
			Context    string `json:"context"`
			Author     string `json:"author"`
			Version    int    `json:"version"`
			Statements []stmt `json:"statements"`
		}{ID: doc.ID, Context: doc.Context, Author: doc.Author, Version: doc.Version}
		for i := range doc.Statements {
			s := &doc.Statements[i]
			if err := s.Validate(); err != nil {
				fail("statement %d: %v", i, err)
			}
			var ps []string
			for _, p := range s.Products {
				ps = append(ps, p.ID)
			}
			out.Statements = append(out.Statements, stmt{string(s.Vulnerability.Name), string(s.Status), ps})
		}
		if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
			fail("%v", err)
		}
	case "match":
		if len(os.Args) < 5 {
			fail("usage: vexcheck match FILE VULN PRODUCT [SUBCOMPONENT]")
		}
		var subs []string
		if len(os.Args) > 5 {
			subs = os.Args[5:6]
		}
		m := doc.Matches(os.Args[3], os.Args[4], subs)
		if len(m) == 0 {
			fmt.Println("none")
			return
		}
		// Matches sorts by time: the last one is the latest, the one that speaks.
		fmt.Println(m[len(m)-1].Status)
	default:
		fail("unknown command %q", os.Args[1])
	}
}
