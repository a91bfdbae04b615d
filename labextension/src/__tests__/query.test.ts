import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { apiErrorMessage, buildQuery, runPath } from '../query.js';

describe('buildQuery', () => {
  it('keeps the order and skips empty values', () => {
    assert.equal(buildQuery({ flow: 'etl', state: '', limit: 50 }), '?flow=etl&limit=50');
    assert.equal(buildQuery({ flow: null, state: undefined }), '');
    assert.equal(buildQuery({}), '');
  });

  it('escapes names and values', () => {
    assert.equal(buildQuery({ flow: 'a b&c=d/é' }), '?flow=a%20b%26c%3Dd%2F%C3%A9');
    assert.equal(buildQuery({ all: true, n: 0 }), '?all=true&n=0');
  });
});

describe('runPath', () => {
  it('escapes the id', () => {
    assert.equal(runPath('3f2a-11'), 'runs/3f2a-11');
    assert.equal(runPath('a/b?c'), 'runs/a%2Fb%3Fc');
  });
});

describe('apiErrorMessage', () => {
  it("shows the server's JSON message with the status", () => {
    assert.equal(
      apiErrorMessage(404, 'Not Found', '{"message": "No flow run matches \'zzz\'."}'),
      "No flow run matches 'zzz'. (HTTP 404 Not Found)"
    );
    assert.equal(apiErrorMessage(400, '', '{"message": "bad limit"}'), 'bad limit (HTTP 400)');
  });

  it('explains a 404 without a JSON message as a missing server extension', () => {
    const message = apiErrorMessage(404, 'Not Found', '<html>404</html>');
    assert.match(message, /flowbook server extension did not answer \(HTTP 404 Not Found\)/);
    assert.match(message, /flowbook\.jupyter\.server/);
  });

  it('explains a 403 and other statuses', () => {
    assert.match(
      apiErrorMessage(403, 'Forbidden', ''),
      /refused the request \(HTTP 403 Forbidden\)/
    );
    assert.equal(
      apiErrorMessage(500, 'Internal Server Error', '{}'),
      'The server answered HTTP 500 Internal Server Error.'
    );
    assert.equal(apiErrorMessage(502, '', '{"message": 3}'), 'The server answered HTTP 502.');
  });
});
