// The API client: the token lives in sessionStorage (gone when the tab
// closes) and travels only in the Authorization header, never in a URL.

const KEY = "fairgrid.token";

export const token = () => sessionStorage.getItem(KEY);
export const setToken = (t) => sessionStorage.setItem(KEY, t);
export const clearToken = () => sessionStorage.removeItem(KEY);

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function request(path, { method = "GET", body, raw = false, auth = token() } = {}) {
  const headers = {};
  if (auth) headers.Authorization = `Bearer ${auth}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store", credentials: "omit",
  });
  if (!res.ok) {
    let code = "http_" + res.status, message = `${res.status} ${res.statusText}`;
    try {
      const e = (await res.json()).error;
      code = e.code; message = e.message;
    } catch { /* not the API's JSON */ }
    if (res.status === 401 && auth === token()) {
      clearToken();
      window.dispatchEvent(new Event("fairgrid-logout"));
    }
    throw new ApiError(res.status, code, message);
  }
  if (raw) return res;
  const type = res.headers.get("content-type") || "";
  return type.includes("json") ? res.json() : res.text();
}

export const get = (path) => request(path);
export const post = (path, body = {}) => request(path, { method: "POST", body });
export const getRaw = (path) => request(path, { raw: true });

// Checks a token without keeping it (the login form).
export const tryToken = (t) => request("/v1/status", { auth: t });

// Trades a one-time link code for the token.
export const redeem = (code) => request("/v1/ui/redeem", { method: "POST", body: { code }, auth: null });
