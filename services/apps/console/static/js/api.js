// REST client of the console: bearer token from localStorage, the API's error body as an ApiError.

const TOKEN_KEY = 'maas.token';
const USER_KEY = 'maas.user';

export const auth = {
  get token() { return localStorage.getItem(TOKEN_KEY); },
  get user() {
    try { return JSON.parse(localStorage.getItem(USER_KEY) || 'null'); } catch { return null; }
  },
  set(token, user) {
    localStorage.setItem(TOKEN_KEY, token);
    localStorage.setItem(USER_KEY, JSON.stringify(user));
  },
  clear() {
    localStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(USER_KEY);
  },
};

// Called on 401 so the app can show the login page (set by app.js).
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

// The platform's word while changes wait (its event bus is down): a `Warning: 199 openmaas "..."`
// header on console-API answers; the handler gets its text, or null once answers come without it.
let onPlatformWarning = () => {};
export function setPlatformWarningHandler(fn) { onPlatformWarning = fn; }
function platformWarning(response) {
  const value = response.headers.get('Warning') || '';
  return value.startsWith('199 openmaas ') ? value.slice('199 openmaas '.length).replace(/^"|"$/g, '') : null;
}

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || (typeof body === 'string' && body) || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || error.type || null;
    this.field = error.field || error.param || null;
    this.details = Array.isArray(error.details) ? error.details : [];
  }
}

function headers(extra = {}) {
  const h = { ...extra };
  if (auth.token) h.Authorization = `Bearer ${auth.token}`;
  return h;
}

async function parse(response) {
  const type = response.headers.get('content-type') || '';
  if (response.status === 204) return null;
  if (type.includes('json')) return response.json();
  return response.text();
}

export async function api(method, path, body, { query } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') params.set(k, v);
    const qs = params.toString();
    if (qs) url += (url.includes('?') ? '&' : '?') + qs;
  }
  const init = { method, headers: headers(body !== undefined ? { 'Content-Type': 'application/json' } : {}) };
  if (body !== undefined) init.body = JSON.stringify(body);
  let response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, { error: { message: `network error: ${e.message}` } });
  }
  if (path.startsWith('/api/v1/')) onPlatformWarning(platformWarning(response));
  const data = await parse(response);
  if (!response.ok) {
    if (response.status === 401 && !path.startsWith('/api/v1/auth/login')) onUnauthorized();
    throw new ApiError(response.status, data);
  }
  return data;
}

export const get = (path, query) => api('GET', path, undefined, { query });
export const post = (path, body = {}) => api('POST', path, body);
export const put = (path, body) => api('PUT', path, body);
export const del = (path) => api('DELETE', path);

// One object PUT with upload progress (fetch has no upload progress; XHR does).
export function uploadObject(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('PUT', `/api/v1/storage/objects/${path.split('/').map(encodeURIComponent).join('/')}`);
    if (auth.token) xhr.setRequestHeader('Authorization', `Bearer ${auth.token}`);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(e.loaded, e.total); };
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { data = xhr.responseText; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiError(xhr.status, data));
    };
    xhr.onerror = () => reject(new ApiError(0, { error: { message: 'network error during upload' } }));
    xhr.send(file);
  });
}

// Upload several files under dest ("bucket/prefix"); progress(doneBytes, totalBytes, currentName).
export async function uploadFiles(dest, files, progress) {
  const total = files.reduce((s, f) => s + f.file.size, 0);
  let done = 0;
  for (const { file, name } of files) {
    await uploadObject(`${dest}/${name}`, file, (loaded) => progress && progress(done + loaded, total, name));
    done += file.size;
    progress && progress(done, total, name);
  }
}

// Server-sent events of a streaming chat: calls onEvent(json) per data line until [DONE].
export async function streamSSE(path, body, onEvent, { signal, token } = {}) {
  const h = { 'Content-Type': 'application/json' };
  const bearer = token || auth.token;
  if (bearer) h.Authorization = `Bearer ${bearer}`;
  const response = await fetch(path, { method: 'POST', headers: h, body: JSON.stringify(body), signal });
  if (!response.ok) {
    if (response.status === 401) onUnauthorized();
    throw new ApiError(response.status, await parse(response));
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let index;
    while ((index = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, index).trim();
      buffer = buffer.slice(index + 1);
      if (!line.startsWith('data:')) continue;
      const data = line.slice(5).trim();
      if (data === '[DONE]') return;
      const event = JSON.parse(data);
      if (event && event.error) throw new ApiError(200, event);
      onEvent(event);
    }
  }
}
