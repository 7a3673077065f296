import { describe, expect, it } from 'vitest';
import { labels, ratio, table } from './format';

describe('CLI tables', () => {
  it('aligns columns and shows missing values as -', () => {
    expect(
      table(
        ['ID', 'STATE', 'IP'],
        [
          ['test:web:0', 'running', '198.19.0.2'],
          ['test:web:10', 'placed', null],
        ],
      ),
    ).toBe('ID           STATE    IP\ntest:web:0   running  198.19.0.2\ntest:web:10  placed   -\n');
  });

  it('shows ratios and labels', () => {
    expect(ratio(3, 8)).toBe('3/8 (38%)');
    expect(ratio(1.5, 0)).toBe('1.5/0 (0%)');
    expect(labels({ rack: 'a', zone: 'z1' })).toBe('rack=a,zone=z1');
    expect(labels({})).toBe('-');
  });
});
