package web

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/trustflow/trustflow/internal/auth"
	"github.com/trustflow/trustflow/internal/truststore"
)

func (c *Console) truststoreRoutes() []route {
	return []route{
		{pattern: "GET /ui/cas", perm: auth.PermCAsRead, handle: c.caList},
		{pattern: "POST /ui/cas", perm: auth.PermCAsWrite, handle: c.caAdd},
		{pattern: "GET /ui/cas/{name}", perm: auth.PermCAsRead, handle: c.caDetail},
		{pattern: "POST /ui/cas/{name}/update", perm: auth.PermCAsWrite, handle: c.caUpdate},
		{pattern: "POST /ui/cas/{name}/remove", perm: auth.PermCAsWrite, handle: c.caRemove},
		{pattern: "POST /ui/identities/{name}/prune", perm: auth.PermIdentitiesWrite, handle: c.identityPrune},
		{pattern: "POST /ui/identities/{name}/remove", perm: auth.PermIdentitiesWrite, handle: c.identityRemove},
		{pattern: "GET /ui/identities", perm: auth.PermIdentitiesRead, handle: c.identityList},
		{pattern: "POST /ui/identities/import", perm: auth.PermIdentitiesWrite, handle: c.identityImport},
		{pattern: "POST /ui/identities/create", perm: auth.PermIdentitiesWrite, handle: c.identityCreate},
		{pattern: "GET /ui/identities/{name}", perm: auth.PermIdentitiesRead, handle: c.identityDetail},
		{pattern: "GET /ui/identities/{name}/csr", perm: auth.PermIdentitiesRead, handle: c.identityCSR},
		{pattern: "POST /ui/identities/{name}/certificate", perm: auth.PermIdentitiesWrite, handle: c.identityInstall},
		{pattern: "POST /ui/identities/{name}/rotate", perm: auth.PermIdentitiesWrite, handle: c.identityRotate},
		{pattern: "POST /ui/identities/{name}/activate", perm: auth.PermIdentitiesWrite, handle: c.identityActivate},
	}
}

// formValues keeps what the user typed, so a refused form comes back
// filled in. File inputs and passwords are never kept.
type formValues map[string]string

func keep(r *http.Request, fields ...string) formValues {
	v := formValues{}
	for _, f := range fields {
		v[f] = r.PostFormValue(f)
	}
	return v
}

type casPage struct {
	CAs  []truststore.CA
	Err  *formError
	Form formValues
}

func (c *Console) caList(w http.ResponseWriter, r *http.Request, rq *request) {
	c.showCAs(w, r, rq, http.StatusOK, nil, formValues{})
}

func (c *Console) showCAs(w http.ResponseWriter, r *http.Request, rq *request, status int, fe *formError, form formValues) {
	cas, err := c.cfg.Trust.ListCAs(r.Context())
	if err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	c.renderPage(w, r, rq, status, "cas", "CAs", casPage{CAs: cas, Err: fe, Form: form})
}

func (c *Console) caAdd(w http.ResponseWriter, r *http.Request, rq *request) {
	form := keep(r, "name", "description")
	data, err := formFile(r, "file")
	if err == nil {
		_, err = c.cfg.Trust.AddCA(r.Context(), rq.actor(), truststore.CARequest{Name: strings.TrimSpace(form["name"]), Description: form["description"], Data: data,
			AllowLeafAnchor: r.PostFormValue("allow_leaf_anchor") == "on"})
	}
	if err != nil {
		fe := c.formError(r, err)
		c.showCAs(w, r, rq, fe.Status, fe, form)
		return
	}
	name := strings.TrimSpace(form["name"])
	seeOther(w, r, rq, "/ui/cas/"+name, "CA "+name+" added.")
}

// caPage is a CA's detail page with its update form.
type caPage struct {
	truststore.CA
	Err  *formError
	Form formValues
}

func (c *Console) caDetail(w http.ResponseWriter, r *http.Request, rq *request) {
	c.showCA(w, r, rq, http.StatusOK, nil, formValues{})
}

func (c *Console) showCA(w http.ResponseWriter, r *http.Request, rq *request, status int, fe *formError, form formValues) {
	ca, err := c.cfg.Trust.GetCA(r.Context(), r.PathValue("name"))
	if err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	c.renderPage(w, r, rq, status, "ca", "CA "+ca.Name, caPage{CA: ca, Err: fe, Form: form})
}

// caUpdate replaces a CA bundle's certificates in place; connectors that
// use it see the new bundle on their next handshake.
func (c *Console) caUpdate(w http.ResponseWriter, r *http.Request, rq *request) {
	name := r.PathValue("name")
	form := keep(r, "description")
	data, err := formFile(r, "file")
	if err == nil {
		_, err = c.cfg.Trust.UpdateCA(r.Context(), rq.actor(), truststore.CARequest{Name: name, Description: form["description"], Data: data,
			AllowLeafAnchor: r.PostFormValue("allow_leaf_anchor") == "on"})
	}
	if err != nil {
		fe := c.formError(r, err)
		c.showCA(w, r, rq, fe.Status, fe, form)
		return
	}
	seeOther(w, r, rq, "/ui/cas/"+name, "CA "+name+" updated.")
}

type identitiesPage struct {
	Identities []truststore.Identity
	Err        *formError
	Form       formValues
}

func (c *Console) identityList(w http.ResponseWriter, r *http.Request, rq *request) {
	c.showIdentities(w, r, rq, http.StatusOK, nil, formValues{})
}

func (c *Console) showIdentities(w http.ResponseWriter, r *http.Request, rq *request, status int, fe *formError, form formValues) {
	ids, err := c.cfg.Trust.List(r.Context(), 0)
	if err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	c.renderPage(w, r, rq, status, "identities", "Identities", identitiesPage{Identities: ids, Err: fe, Form: form})
}

// material reads an identity's uploaded certificate and key, or PKCS#12
// file, with their passwords.
func material(r *http.Request) (truststore.Material, error) {
	var m truststore.Material
	var err error
	for field, dst := range map[string]*[]byte{"cert": &m.Cert, "key": &m.Key, "chain": &m.Chain, "pkcs12": &m.PKCS12} {
		if *dst, err = formFile(r, field); err != nil {
			return m, err
		}
	}
	if pw := r.PostFormValue("key_password"); pw != "" {
		m.KeyPassword = []byte(pw)
	}
	m.PKCS12Password = r.PostFormValue("pkcs12_password")
	return m, nil
}

func (c *Console) identityImport(w http.ResponseWriter, r *http.Request, rq *request) {
	form := keep(r, "name", "description")
	name := strings.TrimSpace(form["name"])
	m, err := material(r)
	if err == nil {
		_, err = c.cfg.Trust.Import(r.Context(), rq.actor(), truststore.ImportRequest{Name: name, Description: form["description"], Material: m})
	}
	if err != nil {
		fe := c.formError(r, err)
		c.showIdentities(w, r, rq, fe.Status, fe, form)
		return
	}
	seeOther(w, r, rq, "/ui/identities/"+name, "Identity "+name+" imported; version 1 is active.")
}

// splitNames splits a comma- or space-separated list.
func splitNames(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
}

func (c *Console) identityCreate(w http.ResponseWriter, r *http.Request, rq *request) {
	form := keep(r, "name", "description", "subject", "dns", "key_type")
	name := strings.TrimSpace(form["name"])
	_, _, err := c.cfg.Trust.Create(r.Context(), rq.actor(), truststore.CreateRequest{Name: name, Description: form["description"],
		GenerateSpec: truststore.GenerateSpec{Subject: form["subject"], DNSNames: splitNames(form["dns"]), KeyType: form["key_type"]}})
	if err != nil {
		fe := c.formError(r, err)
		c.showIdentities(w, r, rq, fe.Status, fe, form)
		return
	}
	seeOther(w, r, rq, "/ui/identities/"+name, "Identity "+name+" created: its key was generated inside trustflow. Have the CSR signed, then install the certificate.")
}

type identityPage struct {
	Identity truststore.Identity
	// Pending is the version waiting for its certificate, if any.
	Pending *truststore.Version
	Err     *formError
	Form    formValues
}

func (c *Console) identityDetail(w http.ResponseWriter, r *http.Request, rq *request) {
	c.showIdentity(w, r, rq, http.StatusOK, nil, formValues{})
}

func (c *Console) showIdentity(w http.ResponseWriter, r *http.Request, rq *request, status int, fe *formError, form formValues) {
	id, err := c.cfg.Trust.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	page := identityPage{Identity: id, Err: fe, Form: form}
	for i := range id.Versions {
		if id.Versions[i].Status == truststore.StatusPending {
			page.Pending = &id.Versions[i]
		}
	}
	c.renderPage(w, r, rq, status, "identity", "Identity "+id.Name, page)
}

// identityCSR downloads the pending version's certificate signing request.
func (c *Console) identityCSR(w http.ResponseWriter, r *http.Request, rq *request) {
	id, err := c.cfg.Trust.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		c.renderError(w, r, rq, err)
		return
	}
	for _, v := range id.Versions {
		if v.Status == truststore.StatusPending && v.CSR != "" {
			w.Header().Set("Content-Type", "application/pkcs10")
			w.Header().Set("Content-Disposition", `attachment; filename="`+id.Name+"-v"+strconv.Itoa(v.Version)+`.csr"`)
			_, _ = w.Write([]byte(v.CSR)) // a failed write means the browser left
			return
		}
	}
	c.renderPage(w, r, rq, http.StatusNotFound, "error", "No CSR", errorPage{Message: "Identity " + id.Name + " has no version waiting for a certificate.",
		Hint: "Rotate it with a generated key to get a new CSR."})
}

func (c *Console) identityInstall(w http.ResponseWriter, r *http.Request, rq *request) {
	name := r.PathValue("name")
	cert, err := formFile(r, "cert")
	var chain []byte
	if err == nil {
		chain, err = formFile(r, "chain")
	}
	if err == nil {
		_, err = c.cfg.Trust.InstallCertificate(r.Context(), rq.actor(), truststore.InstallRequest{Name: name, Cert: cert, Chain: chain})
	}
	if err != nil {
		fe := c.formError(r, err)
		c.showIdentity(w, r, rq, fe.Status, fe, formValues{})
		return
	}
	seeOther(w, r, rq, "/ui/identities/"+name, "Certificate installed.")
}

func (c *Console) identityRotate(w http.ResponseWriter, r *http.Request, rq *request) {
	name := r.PathValue("name")
	form := keep(r, "subject", "dns", "key_type")
	req := truststore.RotateRequest{Name: name, Stage: r.PostFormValue("stage") == "on"}
	var err error
	if r.PostFormValue("mode") == "generate" {
		req.Generate = &truststore.GenerateSpec{Subject: form["subject"], DNSNames: splitNames(form["dns"]), KeyType: form["key_type"]}
	} else {
		req.Material, err = material(r)
	}
	var res truststore.RotateResult
	if err == nil {
		res, err = c.cfg.Trust.Rotate(r.Context(), rq.actor(), req)
	}
	if err != nil {
		fe := c.formError(r, err)
		c.showIdentity(w, r, rq, fe.Status, fe, form)
		return
	}
	msg := "Version " + strconv.Itoa(res.Version) + " added"
	switch {
	case res.CSR != "":
		msg += ": have its CSR signed, then install the certificate."
	case req.Stage:
		msg += " and staged; activate it when ready."
	default:
		msg += " and activated."
	}
	seeOther(w, r, rq, "/ui/identities/"+name, msg)
}

func (c *Console) identityActivate(w http.ResponseWriter, r *http.Request, rq *request) {
	name := r.PathValue("name")
	v, err := strconv.Atoi(r.PostFormValue("version"))
	if err != nil || v < 1 {
		c.showIdentity(w, r, rq, http.StatusBadRequest, &formError{Status: http.StatusBadRequest, Message: "version: not a version number", Hint: "choose a version from the timeline"}, formValues{})
		return
	}
	if _, err := c.cfg.Trust.Activate(r.Context(), rq.actor(), name, v); err != nil {
		fe := c.formError(r, err)
		c.showIdentity(w, r, rq, fe.Status, fe, formValues{})
		return
	}
	seeOther(w, r, rq, "/ui/identities/"+name, "Version "+strconv.Itoa(v)+" is now active.")
}

// confirmed reports whether a removal form's confirmation box was ticked.
func confirmed(r *http.Request) bool { return r.PostFormValue("confirm") == "on" }

var notConfirmed = &formError{Status: http.StatusBadRequest, Message: "confirm: tick the box to confirm the removal", Hint: "removal cannot be undone"}

// caRemove deletes a CA bundle; one still used by connectors is refused
// with their names.
func (c *Console) caRemove(w http.ResponseWriter, r *http.Request, rq *request) {
	name := r.PathValue("name")
	if !confirmed(r) {
		c.showCA(w, r, rq, http.StatusBadRequest, notConfirmed, formValues{})
		return
	}
	if err := c.cfg.Trust.RemoveCA(r.Context(), rq.actor(), name); err != nil {
		fe := c.formError(r, err)
		c.showCA(w, r, rq, fe.Status, fe, formValues{})
		return
	}
	seeOther(w, r, rq, "/ui/cas", "CA "+name+" removed.")
}

// identityPrune deletes the retired versions and their keys.
func (c *Console) identityPrune(w http.ResponseWriter, r *http.Request, rq *request) {
	name := r.PathValue("name")
	_, pruned, err := c.cfg.Trust.Prune(r.Context(), rq.actor(), name)
	if err != nil {
		fe := c.formError(r, err)
		c.showIdentity(w, r, rq, fe.Status, fe, formValues{})
		return
	}
	msg := "No retired versions to prune."
	if len(pruned) > 0 {
		parts := make([]string, len(pruned))
		for i, v := range pruned {
			parts[i] = strconv.Itoa(v)
		}
		msg = "Pruned version(s) " + strings.Join(parts, ", ") + " and their keys."
	}
	seeOther(w, r, rq, "/ui/identities/"+name, msg)
}

// identityRemove deletes an identity with every version, unless a
// connector uses it.
func (c *Console) identityRemove(w http.ResponseWriter, r *http.Request, rq *request) {
	name := r.PathValue("name")
	if !confirmed(r) {
		c.showIdentity(w, r, rq, http.StatusBadRequest, notConfirmed, formValues{})
		return
	}
	if err := c.cfg.Trust.Remove(r.Context(), rq.actor(), name); err != nil {
		fe := c.formError(r, err)
		c.showIdentity(w, r, rq, fe.Status, fe, formValues{})
		return
	}
	seeOther(w, r, rq, "/ui/identities", "Identity "+name+" removed.")
}
